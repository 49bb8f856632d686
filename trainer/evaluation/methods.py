"""Every quality method the model is compared with, as one score per held-out image.

- ``model:<name>@<version>``: a quality model folder (the candidate, ``sddfiqa-mfn-1``, the current one);
- ``random``: a random order (what discarding without a quality score does);
- ``face_size``: the face's size in the source photo, when known (see :mod:`.heldout`);
- ``detector_score``: YuNet's confidence on the crop;
- ``sharpness``: variance of the Laplacian (the classic focus measure);
- ``embedding_norm``: SFace's embedding length before normalisation (:mod:`engines.embedding_norm`),
  used for both recognisers: a training-free baseline that costs what the model costs;
- ``qualityface``: the published learned peer model (:mod:`.qualityface`);
- ``pseudo_labels``: SDD-FIQA's labels computed with SFace on the held-out set itself, an
  oracle no deployed model can have (it knows every identity): an upper reference, not a rival.

Everything that does not depend on the candidate model is cached by image content, so an
experiment loop pays only for scoring its candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from trainer.evaluation.heldout import HeldoutSet
from trainer.evaluation.store import cached_values

RANDOM, FACE_SIZE, DETECTOR, SHARPNESS = "random", "face_size", "detector_score", "sharpness"
EMBEDDING_NORM, QUALITYFACE, ORACLE = "embedding_norm", "qualityface", "pseudo_labels"
BASELINES = (RANDOM, FACE_SIZE, DETECTOR, SHARPNESS, EMBEDDING_NORM, QUALITYFACE)
MODEL_PREFIX = "model:"
# The model every ship criterion compares against (README: "beats sddfiqa-mfn-1").
REFERENCE_MODEL = "sddfiqa-mfn-1"


@dataclass
class MethodScores:
    """Quality per image for every method, and why a method is missing where it is."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def _progress(total: int, label: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="crop", disable=not progress or total == 0, leave=False)


def _batched(function: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, label: str, progress: bool,
             batch: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """``compute(indices)`` for :func:`cached_values` that runs ``function`` in batches with a progress bar."""

    def compute(indices: np.ndarray) -> np.ndarray:
        out = []
        with _progress(len(indices), label, progress) as bar:
            for start in range(0, len(indices), batch):
                chunk = indices[start : start + batch]
                out.append(np.asarray(function(crops[chunk])))
                bar.update(len(chunk))
        return np.concatenate(out) if out else np.zeros((0,))

    return compute


def _lazy(factory: Callable[[], object], method: str = "score") -> Callable[[np.ndarray], np.ndarray]:
    """A scoring function that builds its model on first use only (nothing loads when all is cached)."""
    holder: list = []

    def run(crops: np.ndarray) -> np.ndarray:
        if not holder:
            holder.append(factory())
        return getattr(holder[0], method)(crops)

    return run


def embeddings_of_crops(crops: np.ndarray, keys: list[str], name: str, cache: Path,
                       progress: bool = True) -> np.ndarray:
    """Unit-length embeddings by one recogniser (``trainer.recognizers``), cached by ``keys``."""
    from trainer.evaluation.parallel import RecognizerPool, default_workers
    from trainer.recognizers import recognizer, recognizer_class

    kind = recognizer_class(name)
    workers = default_workers() if kind.one_thread else 1
    if workers > 1:  # one face at a time on one thread: a process per core
        with RecognizerPool(name, workers) as pool:
            compute = _batched(pool.embed, crops, f"{name} embeddings ({workers} processes)", progress,
                               batch=32 * workers)
            return cached_values(cache, f"{name}-{kind.version}", keys, compute, save_every=256)
    compute = _batched(_lazy(lambda: recognizer(name), "embed"), crops, f"{name} embeddings", progress, batch=32)
    return cached_values(cache, f"{name}-{kind.version}", keys, compute, save_every=256)


def embeddings(heldout: HeldoutSet, name: str, cache: Path, progress: bool = True) -> np.ndarray:
    """A held-out set's embeddings by one recogniser, cached by file content."""
    return embeddings_of_crops(heldout.crops, heldout.keys, name, cache, progress)


class ModelScores:
    """A quality model folder or name: its tag, and its scores of any crops, cached by its sha256."""

    def __init__(self, model: str, cache: Path, progress: bool = True) -> None:
        from engines.manifest import read_manifest
        from engines.modelfiles import model_dir

        manifest = read_manifest(model_dir(model))
        self.model, self.tag, self.sha256 = model, manifest.tag, manifest.sha256
        self.method = MODEL_PREFIX + self.tag
        self.cache, self.progress = cache, progress

    def _scorer(self):
        from engines.quality import QualityScorer

        return QualityScorer(self.model, backend="onnxruntime")

    def scores(self, crops: np.ndarray, keys: list[str]) -> np.ndarray:
        compute = _batched(_lazy(self._scorer), crops, f"{self.tag} scores", self.progress)
        return cached_values(self.cache, f"quality-{self.sha256[:16]}", keys, compute, save_every=1024).reshape(-1)


class _Detector:
    def __init__(self) -> None:
        from engines.detector import Detector

        self._detector = Detector(score_threshold=0.05, max_side=None)

    def score(self, crops: np.ndarray) -> np.ndarray:
        """YuNet's best score on each crop, padded by 40 px so the face is not cut at the border."""
        scores = []
        for crop in crops:
            padded = cv2.copyMakeBorder(crop, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=0)
            faces = self._detector.detect(padded)
            scores.append(float(faces.scores.max()) if len(faces) else 0.0)
        return np.array(scores)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of the grey crop."""
    return np.array([cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for c in crops])


def _embedding_norm():
    from engines.embedding_norm import EmbeddingNormScorer

    return EmbeddingNormScorer()


def _qualityface():
    from trainer.evaluation.qualityface import QualityFaceScorer

    return QualityFaceScorer()


def oracle_labels(heldout: HeldoutSet, sface: np.ndarray) -> np.ndarray:
    """SDD-FIQA pseudo-labels of the held-out set (reference constants); NaN for one-image identities."""
    from trainer.labels import fast_labels
    from trainer.sddfiqa import LabelParams

    ids = np.unique(heldout.identities, return_inverse=True)[1]
    return np.asarray(fast_labels(sface, ids, LabelParams()).labels, np.float64)


def baseline_scores(heldout: HeldoutSet, cache: Path, sface: np.ndarray, progress: bool = True) -> MethodScores:
    """Every method but the models, cached by content where it costs anything."""
    from engines.errors import ModelError

    out = MethodScores()
    out.scores[RANDOM] = np.random.default_rng(0).random(len(heldout))
    if heldout.face_px is not None:
        out.scores[FACE_SIZE] = heldout.face_px
    else:
        out.unavailable[FACE_SIZE] = heldout.face_px_note
    crops = heldout.crops
    out.scores[DETECTOR] = cached_values(cache, "detector-yunet-2023mar-pad40", heldout.keys,
                                         _batched(_lazy(_Detector), crops, DETECTOR, progress)).reshape(-1)
    out.scores[SHARPNESS] = cached_values(cache, "sharpness-laplacian", heldout.keys,
                                          _batched(sharpness, crops, SHARPNESS, progress)).reshape(-1)
    norms = _batched(_lazy(_embedding_norm), crops, EMBEDDING_NORM, progress)
    out.scores[EMBEDDING_NORM] = cached_values(cache, "embedding-norm-sface-2021dec", heldout.keys, norms).reshape(-1)
    try:
        peer = _batched(_lazy(_qualityface), crops, QUALITYFACE, progress)
        out.scores[QUALITYFACE] = cached_values(cache, "qualityface-1.0.3", heldout.keys, peer).reshape(-1)
    except (ModelError, ImportError) as exc:
        out.unavailable[QUALITYFACE] = str(exc)
    out.scores[ORACLE] = oracle_labels(heldout, sface)
    return out
