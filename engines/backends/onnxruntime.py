"""ONNX Runtime backend: the CPU path, and the reference every other backend matches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.errors import ModelError


class OnnxRuntimeBackend:
    """An ``InferenceSession`` behind the :class:`engines.backends.Backend` protocol."""

    def __init__(self, model_path: Path, threads: int | None = None, spin: bool = False) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("FACEGATE_ORT_THREADS", "0"))
        options.log_severity_level = 3
        # By default idle worker threads sleep instead of spinning: in a gate that runs small
        # batches several times a second, spinning burns a core for nothing. Offline batch
        # scoring (``spin=True``) gains some throughput from it.
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load {model_path}: {str(exc).splitlines()[0]}") from None
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(list(self.output_names), inputs)
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
