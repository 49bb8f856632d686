"""Error-versus-reject curves (the protocol of CR-FIQA's ``ERC/erc.py``, as DESIGN says).

A pair's quality is the lower of its two images' scores. For each discard fraction u,
the lowest-quality u of mated pairs and of non-mated pairs are dropped; on what remains
the threshold for the target FMR is recomputed from the non-mated scores and FNMR is
measured on the mated ones. Lower curves and areas are better.
"""

from __future__ import annotations

import numpy as np

DISCARD = np.round(np.arange(0.0, 0.951, 0.05), 2)
FMRS = (1e-2, 1e-3, 1e-4)
# Where decisions are taken: bootstrap intervals, the threshold table, ship claims, promotion.
DECISION_FMR = 1e-3


def fnmr_at_fmr(mated: np.ndarray, nonmated: np.ndarray, fmr: float) -> float:
    """FNMR at the threshold where the non-mated acceptance rate is at most ``fmr``."""
    if len(mated) == 0 or len(nonmated) == 0:
        return float("nan")
    ordered = np.sort(nonmated)[::-1]
    allowed = int(np.floor(fmr * len(ordered)))
    threshold = ordered[allowed] if allowed < len(ordered) else -np.inf  # accept scores above it
    return float(np.mean(mated <= threshold))


def _keep_best(quality: np.ndarray, fraction: float, rng_order: np.ndarray) -> np.ndarray:
    """Indices of pairs kept after dropping the lowest ``fraction`` by quality (stable ties)."""
    order = np.lexsort((rng_order, quality))
    return order[round(fraction * len(order)):]


def erc_curve(mated_scores: np.ndarray, mated_quality: np.ndarray, nonmated_scores: np.ndarray,
              nonmated_quality: np.ndarray, fmr: float, seed: int = 0,
              ties: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """FNMR at each discard fraction of :data:`DISCARD`.

    Pairs of equal quality are ordered by random draws (``seed``) or by ``ties`` (mated, non-mated).
    This is the reference: :mod:`trainer.evaluation.weighted_erc` computes the same curves faster.
    """
    if ties is None:
        rng = np.random.default_rng(seed)
        ties = rng.permutation(len(mated_scores)), rng.permutation(len(nonmated_scores))
    tie_m, tie_n = ties
    return np.array([
        fnmr_at_fmr(mated_scores[_keep_best(mated_quality, u, tie_m)],
                    nonmated_scores[_keep_best(nonmated_quality, u, tie_n)], fmr)
        for u in DISCARD
    ])


def area(curve: np.ndarray, up_to: float = 0.95) -> float:
    """Trapezoidal area under an ERC from u = 0 to ``up_to``."""
    mask = up_to + 1e-9 >= DISCARD
    return float(np.trapezoid(curve[mask], DISCARD[mask]))
