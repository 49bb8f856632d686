"""Recognition embedder: SFace, 128-d, L2-normalised, batched.

Takes aligned 112×112 BGR crops (as :func:`engines.alignment.align_faces` makes them);
colour order and scaling come from the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.backends import Backend
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.manifest import Manifest
from engines.modelfiles import load_model
from engines.preprocess import to_blob

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
        crops = np.asarray(aligned_crops)
        if crops.ndim == 3:
            crops = crops[None]
        chunks = []
        for start in range(0, len(crops), self.batch_size):
            blob = to_blob(crops[start : start + self.batch_size], self.manifest.input)
            out = self._backend.run({self.manifest.input.name: blob})[self.manifest.outputs[0]]
            chunks.append(out)
        if not chunks:
            return np.zeros((0, self.dim), np.float32)
        raw = np.concatenate(chunks).astype(np.float32)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-12)

    def close(self) -> None:
        self._backend.close()
