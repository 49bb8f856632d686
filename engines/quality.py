"""Quality scorer: aligned crops → SDD-FIQA quality 0..100, batched.

Runs the current quality model (``engines/models/current.json``) or a named one, on
TensorRT when a built plan, the ``tensorrt`` package and a GPU are present (``backend=
"auto"``), else on ONNX Runtime. The manifest says how to feed it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.backends import Backend, run_crops
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.manifest import Manifest
from engines.modelfiles import load_model, model_dir
from engines.registry import current_model

log = logging.getLogger(__name__)


def _tensorrt_backend(manifest: Manifest, directory: Path) -> Backend | None:
    """A TensorRT backend for this model if a plan for this GPU exists, else None."""
    from engines.backends.tensorrt import TensorRTBackend, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        log.info("quality model on ONNX Runtime: %s", reason)
        return None
    for entry in manifest.engines.values():
        plan = directory / entry["file"]
        if plan.is_file():
            return TensorRTBackend(plan)
    log.info("quality model on ONNX Runtime: no TensorRT plan built for %s", manifest.tag)
    return None


class QualityScorer:
    """Scores aligned 112×112 BGR crops; higher is more recognisable."""

    def __init__(self, model: str | None = None, backend: str = "auto", batch_size: int = 32,
                 cache: Path | None = None, spin: bool = False, threads: int | None = None) -> None:
        name = model or current_model("quality")
        manifest, onnx_path = load_model(name, cache)
        self.manifest = manifest
        self.batch_size = batch_size
        chosen: Backend | None = None
        if backend in ("auto", "tensorrt"):
            chosen = _tensorrt_backend(manifest, model_dir(name))
            if chosen is None and backend == "tensorrt":
                from engines.backends.tensorrt import tensorrt_unavailable_reason
                from engines.errors import ModelError

                raise ModelError(f"TensorRT backend requested but unusable: "
                                 f"{tensorrt_unavailable_reason() or 'no plan built (trainer build)'}")
        self.backend_name = "tensorrt" if chosen else "onnxruntime"
        self._backend = chosen or OnnxRuntimeBackend(onnx_path, threads=threads, spin=spin)
        self._low, self._high = manifest.output_range or (0.0, 100.0)

    def score(self, aligned_crops: np.ndarray) -> np.ndarray:
        """N×112×112×3 BGR uint8 → N quality scores, clipped to the manifest's range."""
        scores = run_crops(self._backend, self.manifest, aligned_crops, self.batch_size)
        if scores is None:
            return np.zeros((0,), np.float32)
        return np.clip(scores.reshape(-1), self._low, self._high).astype(np.float32)

    def close(self) -> None:
        self._backend.close()
