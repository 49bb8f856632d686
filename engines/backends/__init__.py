"""Inference backends: one protocol, ``run(inputs) -> outputs``, batch-first.

ONNX Runtime runs everywhere (CPU); TensorRT (GPU, via pycuda) is imported lazily by
its own module so that a machine without a GPU never touches it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """Runs a network on a batch. Inputs and outputs are named, batch-first arrays."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; every output's first axis matches the inputs'."""
        ...

    def close(self) -> None:
        """Release what the backend holds (sessions, device memory)."""
        ...
