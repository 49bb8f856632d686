"""Does the score fall as a face gets worse, from the mildest degradation on?

A few clean held-out crops per person go through every degradation kind at every step of
``trainer.degrade.ladder`` (three mild steps, then the seed set's levels 1-3). For each kind
and step the report gives

- the recogniser's own view: SFace's mean similarity of the degraded crop to the clean
  photos of its person (what "worse" means for recognition; it falls step by step);
- the model's mean score;

and, per kind, the mean over crops of the Spearman correlation between step (0 = clean …
6) and the model's score (the ship criterion: ≤ −0.8), also over the clean and mild steps
alone (0-3). Degraded crops are made in memory (deterministic seeds) and their embeddings and
scores cached by pixel content, so a second model pays only for its own scores.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from trainer.degrade import DEGRADATIONS, MILD_STEPS, degrade_by, ladder
from trainer.evaluation.heldout import HeldoutSet

CRITERION = -0.8


def ladder_originals(heldout: HeldoutSet, per_identity: int) -> np.ndarray:
    """Up to ``per_identity`` clean crops of each person who has at least two, spread over their photos."""
    clean = np.ones(len(heldout), bool) if heldout.clean is None else heldout.clean
    picks: list[int] = []
    for name in np.unique(heldout.identities):
        members = np.nonzero((heldout.identities == name) & clean)[0]
        if len(members) < 2:
            continue
        spread = np.linspace(0, len(members) - 1, min(per_identity, len(members))).round().astype(int)
        picks.extend(members[np.unique(spread)].tolist())
    return np.array(picks, dtype=np.int64)


def _ladder_crops(crops: np.ndarray, paths: list[str], kind: str) -> np.ndarray:
    """originals × steps × 112×112×3: every original at every step of ``kind``'s ladder."""
    out = np.empty((len(crops), len(ladder(kind)), *crops.shape[1:]), np.uint8)
    for i, (crop, path) in enumerate(zip(crops, paths, strict=True)):
        for step, strength in enumerate(ladder(kind)):
            out[i, step] = degrade_by(crop, kind, strength, zlib.crc32(f"{Path(path).name}|{kind}|{step}".encode()))
    return out


def _pixel_keys(crops: np.ndarray) -> list[str]:
    return [hashlib.sha256(c.tobytes()).hexdigest() for c in crops]


def _spearman(values: np.ndarray) -> float:
    """Rank correlation of step (0, 1, …) with ``values``; 0 when the values do not vary."""
    rho = spearmanr(np.arange(len(values)), values).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def degradation_response(heldout: HeldoutSet, per_identity: int, clean_scores: np.ndarray,
                         score: Callable[[np.ndarray, list[str]], np.ndarray], sface_clean: np.ndarray | None,
                         cache: Path, progress: bool = True) -> dict:
    """The ``degradation`` block of the report for one model (``score``: crops → cached scores).

    ``sface_clean``: SFace embeddings of the whole held-out set (for the recogniser's similarity);
    None skips that column (it costs an SFace pass over every ladder crop the first time).
    """
    from tqdm import tqdm

    from trainer.evaluation.methods import embeddings_of_crops

    originals = ladder_originals(heldout, per_identity)
    if not len(originals):
        return {}
    crops = heldout.crops[originals]
    paths = [heldout.paths[i] for i in originals]
    mild = len(MILD_STEPS[DEGRADATIONS[0]])
    kinds = {}
    for kind in tqdm(DEGRADATIONS, desc="degradation ladder", unit="kind", disable=not progress, leave=False):
        made = _ladder_crops(crops, paths, kind)
        flat = made.reshape(-1, *made.shape[2:])
        keys = _pixel_keys(flat)
        scores = np.concatenate([clean_scores[originals, None], score(flat, keys).reshape(len(originals), -1)], 1)
        entry = {"strengths": [0, *ladder(kind)],
                 "spearman": round(float(np.mean([_spearman(row) for row in scores])), 4),
                 "spearman_mild": round(float(np.mean([_spearman(row[: mild + 1]) for row in scores])), 4),
                 "score": [round(float(v), 3) for v in scores.mean(axis=0)]}
        if sface_clean is not None:
            vectors = embeddings_of_crops(flat, keys, "sface", cache, progress).reshape(len(originals), -1,
                                                                                     sface_clean.shape[1])
            vectors = np.concatenate([sface_clean[originals, None], vectors], axis=1)
            clean = np.ones(len(heldout), bool) if heldout.clean is None else heldout.clean
            similarity = np.zeros(vectors.shape[:2])
            for n, index in enumerate(originals):  # against the other clean photos of the same person
                partners = np.nonzero((heldout.identities == heldout.identities[index]) & clean)[0]
                partners = partners[partners != index]
                similarity[n] = (vectors[n] @ sface_clean[partners].T).mean(axis=1)
            mean_similarity = similarity.mean(axis=0)
            mean_score = scores.mean(axis=0)
            entry["similarity"] = [round(float(v), 4) for v in mean_similarity]
            falls = np.diff(mean_similarity) < 0
            entry["score_falls_where_similarity_falls"] = bool(np.all(np.diff(mean_score)[falls] < 0))
        kinds[kind] = entry
    return {"data": heldout.name, "originals": len(originals), "identities": len(np.unique(
        heldout.identities[originals])), "criterion": CRITERION, "mild_steps": mild, "kinds": kinds}


def spearman_by_kind(block: dict) -> dict[str, float]:
    """kind → mean Spearman over the whole ladder (the report's ``degradation_response``)."""
    return {kind: entry["spearman"] for kind, entry in block.get("kinds", {}).items()}
