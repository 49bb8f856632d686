"""95% bootstrap intervals over identities for the areas under the ERC.

Pairs of images of one person are not independent samples: the person is. So each replicate
draws the held-out identities with replacement (as many as there are) and the pairs follow
them: a mated pair of a person drawn k times counts k times, a non-mated pair of two people
drawn k and l times counts k·l times (copies of one person are not compared with each other).
On the resampled pairs the whole protocol runs again: discard the lowest-quality fraction u,
recompute the FMR threshold, measure FNMR (:mod:`trainer.evaluation.weighted_erc`, exact).
Intervals are the 2.5th and 97.5th percentiles over replicates. The difference between two
methods is taken within each replicate (same draws for every method), so its interval
accounts for their correlation.

Only the discard fractions up to ``UP_TO`` are recomputed in replicates: the intervals are for
pAUC (u ≤ 0.2 and u ≤ 0.3), what the ship criteria use. 1,000 replicates by default (the usual
number for percentile intervals); replicate areas of methods that do not depend on the
candidate model (baselines) are cached on disk, keyed by everything they depend on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.erc import DECISION_FMR, DISCARD, area
from trainer.evaluation.weighted_erc import ErcSet

REPLICATES = 1000
SEED = 0
UP_TO = 0.3
AREAS = ("pauc_0.2", "pauc_0.3")
_LIMITS = {"pauc_0.2": 0.2, "pauc_0.3": 0.3}


def identity_draws(n_identities: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """replicates × n_identities: how many times each identity is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_identities, size=(replicates, n_identities))
    return np.stack([np.bincount(row, minlength=n_identities) for row in draws])


def _areas(curve: np.ndarray, discard: np.ndarray) -> dict[str, float]:
    padded = np.full(len(DISCARD), np.nan)
    padded[: len(discard)] = curve
    return {name: area(padded, limit) for name, limit in _LIMITS.items()}


@dataclass
class Interval:
    low: float
    high: float

    def as_list(self, digits: int = 6) -> list[float]:
        return [round(self.low, digits), round(self.high, digits)]

    def excludes_zero(self) -> bool:
        return self.high < 0 or self.low > 0


def interval(values: np.ndarray) -> Interval:
    """Percentile 95% interval, ignoring replicates where the area is undefined (no mated pair kept)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return Interval(float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(float(low), float(high))


class Bootstrap:
    """Replicate areas per (recogniser, method) at one FMR, on one :class:`ErcSet`."""

    def __init__(self, erc: ErcSet, fmr: float = DECISION_FMR, replicates: int = REPLICATES, seed: int = SEED,
                 cache_dir: Path | None = None, set_fingerprint: str = "") -> None:
        self.erc = erc
        self.fmr = fmr
        self.draws = identity_draws(erc.pairs.n_identities, replicates, seed)
        self.discard = DISCARD[DISCARD <= UP_TO + 1e-9]
        self.cache_dir = cache_dir
        self.set_fingerprint = set_fingerprint
        self.seed = seed
        self.values: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (recogniser, method) → area → B values

    def _cache_file(self, method: str, quality_digest: str) -> Path | None:
        if self.cache_dir is None or not self.set_fingerprint:
            return None
        blob = "|".join([self.set_fingerprint, method, quality_digest, ",".join(self.erc.recognizers),
                         str(self.fmr), str(len(self.draws)), str(self.seed), str(UP_TO), "v1"])
        return self.cache_dir / f"bootstrap-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.npz"

    def run(self, method: str, quality: np.ndarray | None = None, progress: bool = False) -> None:
        """Replicate areas of ``method`` (already added to the ErcSet); cached when ``quality`` is given."""
        from tqdm import tqdm

        digest = hashlib.sha256(np.ascontiguousarray(quality).tobytes()).hexdigest() if quality is not None else ""
        cache_file = self._cache_file(method, digest) if digest else None
        if cache_file is not None and cache_file.is_file():
            with np.load(cache_file) as data:
                for recognizer in self.erc.recognizers:
                    self.values[(recognizer, method)] = {a: data[f"{recognizer}|{a}"] for a in AREAS}
            return
        out = {(r, a): np.empty(len(self.draws)) for r in self.erc.recognizers for a in AREAS}
        for b, multiplicity in enumerate(tqdm(self.draws, desc=f"bootstrap {method}", unit="rep",
                                              disable=not progress, leave=False)):
            curves = self.erc.curves(method, (self.fmr,), multiplicity, self.discard)
            for recognizer, by_fmr in curves.items():
                for name, value in _areas(by_fmr[self.fmr], self.discard).items():
                    out[(recognizer, name)][b] = value
        for recognizer in self.erc.recognizers:
            self.values[(recognizer, method)] = {a: out[(recognizer, a)] for a in AREAS}
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp.npz")
            np.savez(tmp, **{f"{r}|{a}": v for (r, a), v in out.items()})
            tmp.replace(cache_file)

    def interval(self, recognizer: str, method: str, name: str = "pauc_0.3") -> Interval:
        return interval(self.values[(recognizer, method)][name])

    def difference(self, recognizer: str, method: str, versus: str, name: str = "pauc_0.3") -> Interval:
        """Interval of area(method) − area(versus), replicate by replicate."""
        return interval(self.values[(recognizer, method)][name] - self.values[(recognizer, versus)][name])
