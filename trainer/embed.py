"""Recognition embeddings of a dataset, cached by image content.

Each image is keyed by the sha256 of its bytes and the recogniser's sha256, so a rebuild
re-embeds only new or changed images. 112×112 images are taken as aligned crops; other
images are detected (largest face) and aligned first. Unreadable images and images
without a face are counted and listed, never fatal.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.alignment import CROP_SIZE, align_face
from engines.embedder import Embedder
from engines.errors import ImageReadError
from engines.paths import cache_root
from trainer.datasets import FaceDataset, decode_image

NO_FACE = "no face found"


@dataclass
class EmbeddedDataset:
    """Embeddings of the usable images: their keys, file paths, identities and positions."""

    embeddings: np.ndarray
    keys: list[str]
    paths: list[str]
    identities: list[str]
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # positions in the dataset
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model: str = ""
    cache_hits: int = 0


class EmbeddingCache:
    """content sha256 → embedding (or failure reason), one file per recogniser."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        self.failures: dict[str, str] = {}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
                    self.failures = dict(zip(data["failed_keys"].tolist(), data["reasons"].tolist(), strict=True))
            except (OSError, ValueError, KeyError):
                self.vectors, self.failures = {}, {}  # a damaged cache is rebuilt, not trusted

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        vectors = np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys, dtype="U64"), vectors=vectors,
                 failed_keys=np.array(list(self.failures), dtype="U64"),
                 reasons=np.array(list(self.failures.values()), dtype="U200"))
        tmp.replace(self.path)


def _content_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _aligned_crop(image: np.ndarray, detector_factory) -> np.ndarray | None:
    if image.shape[:2] == (CROP_SIZE, CROP_SIZE):
        return image
    faces = detector_factory().detect(image)
    if len(faces) == 0:
        return None
    largest = int(np.argmax(faces.sizes_px))
    return align_face(image, faces.landmarks_px[largest])


def embed_dataset(dataset: FaceDataset, embedder: Embedder | None = None, cache_dir: Path | None = None,
                  batch_size: int = 64, progress: bool = True) -> EmbeddedDataset:
    """Embed every image of ``dataset`` (cached), skipping unreadable and faceless ones."""
    from tqdm import tqdm

    embedder = embedder or Embedder()
    cache = EmbeddingCache((cache_dir or cache_root()) / "embeddings" /
                           f"{embedder.manifest.name}-{embedder.manifest.sha256[:12]}.npz")
    detector = None

    def detector_factory():
        nonlocal detector
        if detector is None:
            from engines.detector import Detector

            detector = Detector(max_side=1280)
        return detector

    keys: list[str | None] = []
    skipped = list(dataset.skipped)
    pending: list[tuple[str, np.ndarray]] = []
    hits = 0

    def flush() -> None:
        if pending:
            vectors = embedder.embed(np.stack([crop for _, crop in pending]))
            for (key, _), vector in zip(pending, vectors, strict=True):
                cache.vectors[key] = vector
            pending.clear()

    for i in tqdm(range(len(dataset)), desc="embeddings", unit="img", disable=not progress):
        try:
            data = dataset.read_bytes(i)
        except ImageReadError as exc:
            skipped.append((dataset.path(i), str(exc).split(": ", 1)[-1]))
            keys.append(None)
            continue
        key = hashlib.sha256(data).hexdigest()
        if key in cache.vectors or key in cache.failures:
            hits += 1
        else:
            try:
                crop = _aligned_crop(decode_image(data, dataset.path(i)), detector_factory)
            except ImageReadError as exc:
                cache.failures[key] = str(exc).split(": ", 1)[-1]
                crop = None
            if crop is None and key not in cache.failures:
                cache.failures[key] = NO_FACE
            if crop is not None:
                pending.append((key, crop))
                if len(pending) >= batch_size:
                    flush()
        keys.append(key)
    flush()
    cache.save()
    rows: list[int] = []
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key in cache.failures:
            skipped.append((dataset.path(i), cache.failures[key]))
            continue
        rows.append(i)
    dim = embedder.dim
    embeddings = (np.stack([cache.vectors[keys[i]] for i in rows]).astype(np.float32) if rows
                  else np.zeros((0, dim), np.float32))
    return EmbeddedDataset(embeddings, [dataset.key(i) for i in rows], [dataset.path(i) for i in rows],
                           [dataset.identity(i) for i in rows], np.asarray(rows, np.int64), skipped,
                           embedder.manifest.tag, hits)
