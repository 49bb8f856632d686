"""Recognition embedder: SFace, 128-d, L2-normalised, batched.

Takes aligned 112×112 BGR crops (as :func:`engines.alignment.align_faces` makes them);
colour order and scaling come from the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.backends import Backend, run_crops
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.manifest import Manifest
from engines.modelfiles import load_model

DEFAULT_RECOGNIZER = "sface-2021dec"


class Embedder:
    """Turns aligned crops into unit-length identity embeddings."""

    def __init__(
        self,
        model: str = DEFAULT_RECOGNIZER,
        batch_size: int = 64,
        backend: Backend | None = None,
        cache: Path | None = None,
    ) -> None:
        manifest, onnx_path = load_model(model, cache)
        self.manifest: Manifest = manifest
        self.batch_size = batch_size
        self._backend = backend or OnnxRuntimeBackend(onnx_path)

    @property
    def dim(self) -> int:
        return int(self.manifest.embedding_dim or 0)

    def embed(self, aligned_crops: np.ndarray) -> np.ndarray:
        """N×112×112×3 BGR uint8 → N×D float32 with unit L2 norm."""
        out = run_crops(self._backend, self.manifest, aligned_crops, self.batch_size)
        if out is None:
            return np.zeros((0, self.dim), np.float32)
        raw = out.astype(np.float32)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-12)

    def close(self) -> None:
        self._backend.close()
