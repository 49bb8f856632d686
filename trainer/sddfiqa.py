"""The SDD-FIQA method's constants: one source of truth for labels and the regressor.

Reference values follow the official code (TFace ``quality/generate_pseudo_labels/
gen_pseudo_labels.py`` and ``train.py``) and the CVPR 2021 paper. Every value is a named
field; departures from the reference are options that are off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LabelParams:
    """How pseudo-labels are drawn and scaled.

    ``positives``: up to this many other images of the same identity per image (all of
    them when there are fewer). ``negatives``: this many images of other identities,
    drawn uniformly at random from the whole dataset without repetition. Per repetition
    the Wasserstein-1 distances are min–max scaled to ``label_range``; the label is the
    mean over ``repetitions``.

    ``negatives_shared_by``: ``"identity"`` (default) gives every image of one identity
    the same negative draw within a repetition. Each image still sees a uniform random
    set of ``negatives`` other-identity images without repetition, exactly the reference
    distribution per image; only draws of different images of one identity are no longer
    independent. It lets similarities be computed as matrix products (the fast path's
    100× speed-up). ``"image"`` draws independently per image, as the official script does.

    Departures, off by default: ``sign_guard`` gives the lowest distance (0) to an image
    whose mean Pos-Sim is below its mean Neg-Sim (a mislabelled or unrecognisable image
    should not look good because its distributions are far apart on the wrong side);
    ``clip_percentile`` clips distances to the [p, 100 − p] percentiles before min–max, so
    a few outliers do not squeeze all other labels together.
    """

    positives: int = 24
    negatives: int = 24
    repetitions: int = 12
    label_range: tuple[float, float] = (0.0, 100.0)
    seed: int = 0
    negatives_shared_by: Literal["identity", "image"] = "identity"
    sign_guard: bool = False
    clip_percentile: float | None = None

    def __post_init__(self) -> None:
        if self.positives < 1 or self.negatives < 1 or self.repetitions < 1:
            raise ValueError("positives, negatives and repetitions must be at least 1")
        if self.clip_percentile is not None and not 0 <= self.clip_percentile < 50:
            raise ValueError("clip_percentile must be in [0, 50)")
        if self.negatives_shared_by not in ("identity", "image"):
            raise ValueError("negatives_shared_by must be 'identity' or 'image'")


@dataclass(frozen=True)
class RegressorParams:
    """The quality regressor's training recipe (official SDD-FIQA values)."""

    input_size: int = 112
    dropout: float = 0.5
    huber_delta: float = 1.0
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (5, 10)
    lr_gamma: float = 0.1
    epochs: int = 20
    horizontal_flip: bool = True
