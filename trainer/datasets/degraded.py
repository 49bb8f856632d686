"""One realistic degradation of a fraction of a dataset's items, as extra items of the same identity.

Camera frames are blurred, small, compressed, noisy, dark, bright or partly hidden; a model that
only saw clean photos cannot learn how much each of these costs recognition. SDD-FIQA labels
every image by its similarities to its own identity's images, so a degraded copy is a *positive*
of its original: it must stay in its identity (and its original in its positives).

:class:`DegradedCopies` keeps every item of a base dataset and appends, for a deterministic
fraction of them, one degraded copy each:

- only items of identities with two or more images get copies: a one-image identity stays a
  negative only (its photo and its own copy would be a "same identity" without any of the
  variation SDD-FIQA's Pos-Sim measures);
- which items get a copy, the kind (uniform over ``trainer.degrade.DEGRADATIONS``) and the
  strength are drawn from ``(seed, item key)`` alone, so adding images to a dataset does not
  change the draws of the others, and the copies of a smaller fraction are among those of a
  larger one (same bytes): the embedding store and the feature cache reuse them by content;
- the strength is spread over each kind's ladder (``trainer.degrade.ladder``): uniform over
  the five stretches between its steps (three mild steps, then the seed set's levels 1-3), so
  60% of copies are between the mildest step and level 1 (where a recogniser's genuine
  similarity has already fallen a few percent, e.g. mild under-exposure) and 40% between
  levels 1 and 3. Strengths are interpolated within a stretch, not the ladder's own values,
  so the evaluation's degradation ladder is not a training point;
- a copy is made when it is read (its original read, degraded, encoded as PNG: lossless,
  so its sha256 is a function of its pixels), never written to disk.

Keys, paths and stamps of copies are the original's with ``~<kind>@<strength>`` appended.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from engines.errors import DatasetError, ImageReadError
from trainer.datasets.base import FaceDataset
from trainer.degrade import DEGRADATIONS, degrade_by, ladder

COPIES_VERSION = 1  # changes whenever the draws or the rendering of a copy change
COPY_MARK = "~"
# Rounding of strengths per kind (JPEG qualities are integers; the rest read well at 3 decimals).
_DECIMALS = {"jpeg": 0}


@dataclass(frozen=True)
class DegradeOptions:
    """``--degrade-fraction`` / ``--degrade-seed``: a fraction of items get one degraded copy."""

    fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise DatasetError(f"the degraded fraction must be between 0 and 1, not {self.fraction}")

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


@dataclass(frozen=True)
class CopyPlan:
    """One degraded copy: which base item, which kind, which strength, and its noise seed."""

    item: int
    kind: str
    strength: float
    seed: int


def _uniforms(seed: int, key: str) -> tuple[float, float, float, float, int]:
    """Four uniforms in [0, 1) and a 31-bit seed, from ``(seed, key)`` only."""
    digest = hashlib.sha256(f"degraded-copies-v{COPIES_VERSION}|{seed}|{key}".encode()).digest()
    words = np.frombuffer(digest, dtype="<u4")
    return (*(float(w) / 2**32 for w in words[:4]), int(words[4] >> 1))


def training_strength(kind: str, position: float) -> float:
    """The strength at ``position`` in [0, 1) along ``kind``'s ladder, each stretch an equal share."""
    steps = ladder(kind)
    stretches = len(steps) - 1
    at = min(max(position, 0.0), 1.0 - 1e-12) * stretches
    low = int(at)
    value = steps[low] + (steps[low + 1] - steps[low]) * (at - low)
    return round(float(value), _DECIMALS.get(kind, 3))


def plan_copy(seed: int, key: str, fraction: float) -> CopyPlan | None:
    """The copy an item with ``key`` gets at ``fraction`` (None: no copy)."""
    chosen, kind_draw, position, _, noise_seed = _uniforms(seed, key)
    if chosen >= fraction:
        return None
    kind = DEGRADATIONS[min(int(kind_draw * len(DEGRADATIONS)), len(DEGRADATIONS) - 1)]
    return CopyPlan(-1, kind, training_strength(kind, position), noise_seed)


class DegradedCopies(FaceDataset):
    """``base``'s items, then one degraded copy of a deterministic fraction of them (same identity).

    The fraction is of the items that can have a copy (identities with two or more images).
    """

    def __init__(self, base: FaceDataset, options: DegradeOptions) -> None:
        if not options.enabled:
            raise DatasetError("degraded copies need a fraction above 0")
        self.base, self.options = base, options
        self.name = base.name
        self.identity_names = base.identity_names
        self.skipped = base.skipped
        plans = []
        counts = np.bincount(base.identity_index)
        for i, key in enumerate(base.all_keys()):
            if counts[base.identity_index[i]] < 2:
                continue  # one-image identities stay negatives only: a photo and its own copy are no identity
            plan = plan_copy(options.seed, key, options.fraction)
            if plan is not None:
                plans.append(CopyPlan(i, plan.kind, plan.strength, plan.seed))
        self.plans = plans
        items = np.array([p.item for p in plans], np.int64)
        self.identity_index = np.concatenate([base.identity_index, base.identity_index[items]]).astype(np.int32)

    @property
    def originals(self) -> int:
        return len(self.base)

    def plan(self, i: int) -> CopyPlan | None:
        """The copy item ``i`` is (None for an original)."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range 0..{len(self) - 1}")
        return None if i < len(self.base) else self.plans[i - len(self.base)]

    @staticmethod
    def _suffix(plan: CopyPlan) -> str:
        return f"{COPY_MARK}{plan.kind}@{plan.strength:g}"

    def key(self, i: int) -> str:
        plan = self.plan(i)
        return self.base.key(i) if plan is None else self.base.key(plan.item) + self._suffix(plan)

    def path(self, i: int) -> str:
        plan = self.plan(i)
        return self.base.path(i) if plan is None else self.base.path(plan.item) + self._suffix(plan)

    def stamp(self, i: int) -> str:
        plan = self.plan(i)
        if plan is None:
            return self.base.stamp(i)
        return f"{self.base.stamp(plan.item)}{self._suffix(plan)}#{plan.seed}/v{COPIES_VERSION}"

    def read(self, i: int) -> np.ndarray:
        plan = self.plan(i)
        if plan is None:
            return self.base.read(i)
        return degrade_by(self.base.read(plan.item), plan.kind, plan.strength, plan.seed)

    def read_bytes(self, i: int) -> bytes:
        plan = self.plan(i)
        if plan is None:
            return self.base.read_bytes(i)
        ok, data = cv2.imencode(".png", self.read(i))
        if not ok:
            raise ImageReadError(f"cannot encode the degraded copy {self.path(i)}")
        return data.tobytes()

    def all_keys(self) -> list[str]:
        keys = self.base.all_keys()
        return keys + [keys[p.item] + self._suffix(p) for p in self.plans]

    def spec(self) -> dict:
        return {"kind": "degraded", "base": self.base.spec(), **asdict(self.options), "version": COPIES_VERSION}

    def describe(self) -> dict:
        """What the copies are: counts per kind and the strengths' range (for summaries and manifests)."""
        kinds: dict[str, dict] = {}
        for plan in self.plans:
            entry = kinds.setdefault(plan.kind, {"copies": 0, "min": plan.strength, "max": plan.strength})
            entry["copies"] += 1
            entry["min"], entry["max"] = min(entry["min"], plan.strength), max(entry["max"], plan.strength)
        return {**asdict(self.options), "version": COPIES_VERSION, "originals": len(self.base),
                "copies": len(self.plans), "kinds": dict(sorted(kinds.items()))}


def with_degraded_copies(dataset: FaceDataset, options: DegradeOptions | None) -> FaceDataset:
    """``dataset`` itself when no copies are asked for, else wrapped in :class:`DegradedCopies`."""
    return DegradedCopies(dataset, options) if options is not None and options.enabled else dataset
