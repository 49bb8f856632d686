"""Quality thresholds users can act on: a model's threshold table and the bands named from it.

The evaluation writes, per recogniser, rows of (quality threshold, fraction of held-out
images below it, FNMR at the table's FMR on the pairs left when those images are rejected)
into the model's ``report.json`` (``thresholds``) and ``manifest.json``
(``evaluation.thresholds``). This module reads that block (it never writes it) and names
bands a person can act on.

Band rule, per recogniser, over the rows in increasing quality:

- ``fnmr_base`` is the first row's FNMR (the least rejection in the table), ``fnmr_best``
  the lowest FNMR of any row that discards at most :data:`MAX_DISCARDED` of the images
  (rejecting more than that is not a gate anyone runs, and the tail of an error-versus-
  reject curve rests on few pairs); ``gain`` is the difference.
- **usable** from the lowest quality whose FNMR has come down by :data:`USABLE_GAIN` of
  the gain (half of what rejecting can achieve is achieved);
- **good** from the lowest quality whose FNMR is within :data:`GOOD_GAIN` of the gain of
  the best: past it rejecting more faces barely lowers the error (the curve's knee);
- **poor** below usable.

A table whose FNMR never falls below its first row's (quality does not predict errors for
that recogniser) names no bands; neither does a model without a table. Either way
everything else works: qualities are shown without a band.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engines.errors import ModelError
from engines.manifest import Manifest, read_manifest
from engines.paths import MODELS_DIR

log = logging.getLogger(__name__)

USABLE_GAIN = 0.5
GOOD_GAIN = 0.9
MAX_DISCARDED = 0.5
BAND_NAMES = ("good", "usable", "poor")


class ThresholdRow(BaseModel):
    """Rejecting images with quality below ``quality`` discards ``discarded`` of them and leaves ``fnmr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: float = Field(ge=0, le=100)
    discarded: float = Field(ge=0, le=1)
    fnmr: float = Field(ge=0, le=1)


class ThresholdTable(BaseModel):
    """The block ``evaluation.thresholds`` of a quality model's manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fmr: float = Field(gt=0, lt=1, description="FMR at which each row's FNMR was measured")
    data: str = Field(description="the held-out set the rows were measured on")
    recognizers: dict[str, tuple[ThresholdRow, ...]] = Field(min_length=1)

    @field_validator("recognizers")
    @classmethod
    def _rows_in_order(cls, value: dict[str, tuple[ThresholdRow, ...]]) -> dict[str, tuple[ThresholdRow, ...]]:
        for name, rows in value.items():
            if len(rows) < 2:
                raise ValueError(f"recogniser {name!r} has {len(rows)} row(s); a table needs at least 2")
            for before, after in pairwise(rows):
                if after.quality <= before.quality:
                    raise ValueError(f"recogniser {name!r}: rows must be in increasing quality "
                                     f"({after.quality} follows {before.quality})")
                if after.discarded < before.discarded:
                    raise ValueError(f"recogniser {name!r}: 'discarded' falls from {before.discarded} to "
                                     f"{after.discarded} as quality rises")
        return value


@dataclass(frozen=True)
class Band:
    """Qualities from ``min_quality`` up (to the next band) carry ``name``.

    ``fnmr`` and ``discarded`` are the table's figures when everything below
    ``min_quality`` is rejected: what ``bestshot.min_quality = min_quality`` would give
    (for the lowest band, the table's first row: the least rejection it measured).
    """

    name: str
    min_quality: float
    fnmr: float
    discarded: float


@dataclass(frozen=True)
class Bands:
    """Named quality bands of one model for one recogniser, best band first."""

    model: str
    recognizer: str
    fmr: float
    bands: tuple[Band, ...]

    def name(self, quality: float) -> str:
        """The band a quality falls in."""
        for band in self.bands:
            if quality >= band.min_quality:
                return band.name
        return self.bands[-1].name


def read_table(manifest: Manifest) -> ThresholdTable | None:
    """The manifest's threshold table; None when it has none, ModelError when it is malformed."""
    raw = (manifest.evaluation or {}).get("thresholds")
    if raw is None:
        return None
    try:
        return ThresholdTable.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"model {manifest.tag}: evaluation.thresholds.{where}: {first['msg']}") from None


def derive_bands(rows: tuple[ThresholdRow, ...]) -> tuple[Band, ...] | None:
    """good / usable / poor from one recogniser's rows (the rule in the module docstring)."""
    base = rows[0]
    within = [row for row in rows if row.discarded <= MAX_DISCARDED] or [base]
    best = min(row.fnmr for row in within)
    gain = base.fnmr - best
    if gain <= 0:
        return None
    usable = next(row for row in within if row.fnmr <= base.fnmr - USABLE_GAIN * gain)
    good = next(row for row in within if row.fnmr <= base.fnmr - GOOD_GAIN * gain)
    return (Band("good", good.quality, good.fnmr, good.discarded),
            Band("usable", usable.quality, usable.fnmr, usable.discarded),
            Band("poor", 0.0, base.fnmr, base.discarded))


def bands_of(manifest: Manifest, recognizer: str | None = None) -> Bands | None:
    """Bands for ``recognizer`` (default: the table's first) or None when the model names none.

    Asking for a recogniser the table does not hold is an error (a misspelt name must not
    silently show no bands).
    """
    table = read_table(manifest)
    if table is None:
        return None
    name = recognizer or next(iter(table.recognizers))
    if name not in table.recognizers:
        raise ModelError(f"model {manifest.tag} has no threshold table for recogniser {name!r} "
                         f"(it has: {', '.join(table.recognizers)})")
    bands = derive_bands(table.recognizers[name])
    if bands is None:
        log.info("model %s: quality does not lower %s's FNMR in its table; no bands", manifest.tag, name)
        return None
    return Bands(manifest.tag, name, table.fmr, bands)


class BandLookup:
    """Bands by model tag (``name@version``, as events carry it), read once per tag.

    Manifests already loaded (the gate's scorer's) are given up front; other tags are looked
    up among the shipped models (folder ``<name>-<version>``). Unknown models, and training-free
    methods (``embedding-norm:<recogniser>@<version>``), have no bands.
    """

    def __init__(self, recognizer: str | None = None, known: tuple[Manifest, ...] = (),
                 models_dir: Path = MODELS_DIR) -> None:
        self.recognizer = recognizer
        self.models_dir = models_dir
        self._cache: dict[str, Bands | None] = {m.tag: bands_of(m, recognizer) for m in known}

    def for_model(self, tag: str) -> Bands | None:
        if tag not in self._cache:
            self._cache[tag] = self._load(tag)
        return self._cache[tag]

    def name(self, tag: str, quality: float) -> str | None:
        bands = self.for_model(tag)
        return bands.name(quality) if bands else None

    def _load(self, tag: str) -> Bands | None:
        name, _, version = tag.rpartition("@")
        folder = self.models_dir / f"{name}-{version}"
        if not name or ":" in name or not (folder / "manifest.json").is_file():
            return None
        try:
            manifest = read_manifest(folder)
            return bands_of(manifest, self.recognizer) if manifest.tag == tag else None
        except ModelError as exc:
            log.warning("no quality bands for %s: %s", tag, exc)
            return None
