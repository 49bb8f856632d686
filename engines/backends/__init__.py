"""Inference backends: one protocol, ``run(inputs) -> outputs``, batch-first.

ONNX Runtime runs everywhere (CPU); TensorRT (GPU, via pycuda) is imported lazily by
its own module so that a machine without a GPU never touches it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from engines.manifest import Manifest
from engines.preprocess import to_blob


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


def run_crops(backend: Backend, manifest: Manifest, crops_bgr: np.ndarray, batch_size: int) -> np.ndarray | None:
    """First output for N BGR images, fed in batches as the manifest says; None for N = 0."""
    crops = np.asarray(crops_bgr)
    if crops.ndim == 3:
        crops = crops[None]
    chunks = [
        backend.run({manifest.input.name: to_blob(crops[start : start + batch_size], manifest.input)})[
            manifest.outputs[0]]
        for start in range(0, len(crops), batch_size)
    ]
    return np.concatenate(chunks) if chunks else None
