"""Embedding-norm quality: the length of SFace's embedding before it is normalised.

A training-free quality score for ArcFace-family recognisers: margin-based losses push
clear, typical faces far from the origin and leave hard or ambiguous ones short, so the
norm of the raw feature ranks images by how confidently the recogniser places them (as
MagFace made explicit). It costs one SFace forward pass per face, what the SDD-FIQA model
costs (both are MobileFaceNets), and needs no training, which makes it the baseline a
learned quality model must beat. Same interface as :class:`engines.quality.QualityScorer`,
so the gate can use either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.backends import Backend, run_crops
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.embedder import DEFAULT_RECOGNIZER
from engines.modelfiles import load_model


class EmbeddingNormScorer:
    """Scores aligned 112×112 BGR crops by the L2 norm of the recogniser's raw embedding."""

    method = "embedding-norm"

    def __init__(self, recognizer: str = DEFAULT_RECOGNIZER, batch_size: int = 32, cache: Path | None = None,
                 backend: Backend | None = None, threads: int | None = None) -> None:
        manifest, onnx_path = load_model(recognizer, cache)
        if manifest.task != "recognizer":
            raise ValueError(f"embedding-norm quality needs a recogniser, {manifest.tag} is a {manifest.task}")
        self.manifest = manifest
        self.batch_size = batch_size
        self.backend_name = "onnxruntime"
        self._backend = backend or OnnxRuntimeBackend(onnx_path, threads=threads)

    @property
    def tag(self) -> str:
        """How events and reports name this scorer: ``embedding-norm:<recogniser>@<version>``."""
        return f"embedding-norm:{self.manifest.tag}"

    def score(self, aligned_crops: np.ndarray) -> np.ndarray:
        """N×112×112×3 BGR uint8 → N norms (float32; higher is more recognisable)."""
        raw = run_crops(self._backend, self.manifest, aligned_crops, self.batch_size)
        if raw is None:
            return np.zeros((0,), np.float32)
        return np.linalg.norm(raw.reshape(len(raw), -1).astype(np.float32), axis=1)

    def close(self) -> None:
        self._backend.close()
