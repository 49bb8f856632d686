"""Which score to reject below: quality threshold → fraction discarded → FNMR at FMR 1e-3.

For each row, images whose quality is below ``quality`` are rejected; only pairs of two kept
images remain; the FMR threshold is recomputed on the remaining non-mated pairs (as the ERC
does) and FNMR is measured on the remaining mated pairs. ``discarded`` is the fraction of
held-out *images* below the threshold (what an operator sees at the gate), not of pairs.

The JSON shape is a contract (the gate reads it from the model's ``manifest.json`` →
``evaluation.thresholds`` and ``report.json`` → ``thresholds``)::

    {"fmr": 0.001, "data": "pins/heldout",
     "recognizers": {"sface": [{"quality": 12.3, "discarded": 0.05, "fnmr": 0.071}, ...], ...}}

rows in increasing ``quality``.
"""

from __future__ import annotations

import numpy as np

from trainer.erc import DECISION_FMR, fnmr_at_fmr
from trainer.evaluation.pairs import Pairs

# Image fractions at which rows are placed (the quality there, rounded to 0.01, is the threshold).
DISCARD_STEPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def quality_steps(quality: np.ndarray, fractions: tuple[float, ...] = DISCARD_STEPS) -> list[float]:
    """Increasing, distinct thresholds at those fractions of the images (rounded down to 0.01)."""
    finite = quality[np.isfinite(quality)]
    values = np.floor(np.quantile(finite, fractions, method="lower") * 100) / 100
    return sorted({round(float(v), 2) for v in values})


def threshold_rows(quality: np.ndarray, pairs: Pairs, mated_similarity: np.ndarray,
                   nonmated_similarity: np.ndarray, fmr: float = DECISION_FMR) -> list[dict]:
    """One recogniser's table: a row per threshold of :func:`quality_steps`."""
    mated_quality, nonmated_quality = pairs.pair_quality(quality)
    finite = np.where(np.isfinite(quality), quality, -np.inf)
    rows = []
    for threshold in quality_steps(quality):
        kept_mated = mated_similarity[mated_quality >= threshold]
        kept_nonmated = nonmated_similarity[nonmated_quality >= threshold]
        rows.append({"quality": threshold, "discarded": round(float(np.mean(finite < threshold)), 4),
                     "fnmr": round(fnmr_at_fmr(kept_mated, kept_nonmated, fmr), 4)})
    return rows


def threshold_table(data: str, quality: np.ndarray, pairs: Pairs,
                    similarities: dict[str, tuple[np.ndarray, np.ndarray]], fmr: float = DECISION_FMR) -> dict:
    """The contract block: ``{"fmr", "data", "recognizers": {name: rows}}``."""
    return {"fmr": fmr, "data": data,
            "recognizers": {name: threshold_rows(quality, pairs, mated, nonmated, fmr)
                            for name, (mated, nonmated) in similarities.items()}}


def markdown(table: dict) -> str:
    """The table as README shows it: one column pair per recogniser."""
    names = list(table["recognizers"])
    by_quality: dict[float, dict[str, dict]] = {}
    for name in names:
        for row in table["recognizers"][name]:
            by_quality.setdefault(row["quality"], {})[name] = row
    head = "| reject below quality | images discarded | " + " | ".join(f"FNMR {n}" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + len(names))]
    for quality, rows in sorted(by_quality.items()):
        first = next(iter(rows.values()))
        cells = [f"{rows[n]['fnmr']:.4f}" if n in rows else "" for n in names]
        lines.append(f"| {quality:.2f} | {first['discarded']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
