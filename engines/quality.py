"""Quality scorer: aligned crops → SDD-FIQA quality 0..100, batched.

Runs the current quality model (``engines/models/current.json``) or a named one. With
``backend="auto"`` it runs a TensorRT plan when one recorded beside it was built from this
model for the running TensorRT version and GPU (``engines/plans.py``) and loads, else ONNX Runtime,
saying why in one log line: a warning when something GPU-side was there to fall back
from (a recorded plan, or a usable TensorRT), an info line on a plain CPU machine.
``backend="tensorrt"`` fails with that reason instead. The manifest says how to feed it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.backends import Backend, run_crops
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.errors import ModelError
from engines.manifest import Manifest
from engines.modelfiles import load_model, model_dir
from engines.plans import recorded_plans, select_plan
from engines.registry import current_model

log = logging.getLogger(__name__)


def _tensorrt_backend(manifest: Manifest, directory: Path) -> tuple[Backend | None, str, bool]:
    """(backend, "", _) with the plan that fits this machine, or (None, why not, whether to warn)."""
    from engines.backends import tensorrt

    records = recorded_plans(directory)
    runtime, reason = tensorrt.tensorrt_runtime()
    if runtime is None:
        return None, reason, bool(records)
    choice = select_plan(records, directory, runtime, manifest.sha256)
    if choice.path is None:
        return None, choice.reason, True
    try:
        backend = tensorrt.TensorRTBackend(choice.path)
    except ModelError as exc:
        return None, f"plan {choice.key}: {exc}", True
    log.info("quality model %s on TensorRT %s (%s, plan %s)", manifest.tag, runtime.version, runtime.gpu, choice.key)
    return backend, "", False


class QualityScorer:
    """Scores aligned 112×112 BGR crops; higher is more recognisable."""

    method = "model"

    def __init__(self, model: str | None = None, backend: str = "auto", batch_size: int = 32,
                 cache: Path | None = None, spin: bool = False, threads: int | None = None) -> None:
        name = model or current_model("quality")
        manifest, onnx_path = load_model(name, cache)
        self.manifest = manifest
        self.batch_size = batch_size
        chosen: Backend | None = None
        if backend in ("auto", "tensorrt"):
            chosen, reason, warn = _tensorrt_backend(manifest, model_dir(name))
            if chosen is None and backend == "tensorrt":
                raise ModelError(f"TensorRT backend requested for {manifest.tag} but unusable: {reason}")
            if chosen is None:
                log.log(logging.WARNING if warn else logging.INFO, "quality model %s on ONNX Runtime: %s",
                        manifest.tag, reason)
        self.backend_name = "tensorrt" if chosen else "onnxruntime"
        self._backend = chosen or OnnxRuntimeBackend(onnx_path, threads=threads, spin=spin)
        self._low, self._high = manifest.output_range or (0.0, 100.0)

    @property
    def tag(self) -> str:
        """How events name this scorer: the model's ``name@version``."""
        return self.manifest.tag

    def score(self, aligned_crops: np.ndarray) -> np.ndarray:
        """N×112×112×3 BGR uint8 → N quality scores, clipped to the manifest's range."""
        scores = run_crops(self._backend, self.manifest, aligned_crops, self.batch_size)
        if scores is None:
            return np.zeros((0,), np.float32)
        return np.clip(scores.reshape(-1), self._low, self._high).astype(np.float32)

    def close(self) -> None:
        self._backend.close()
