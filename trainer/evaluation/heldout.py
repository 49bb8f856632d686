"""The held-out sets the quality model is judged on.

Three suites, each a folder of aligned 112×112 crops in identity folders:

- ``pins`` (the main one): ``pins/heldout`` of the shared face data, 20 people never used
  in training, about 170 photos each, very varied (pose, light, age, make-up).
- ``seed``: the seed set's ``heldout/`` split (17 people from registry-package media; every
  crop also in one degraded copy). Small: what CI evaluates on.
- ``pins-degraded``: ``pins/heldout`` with one realistic degradation per photo, as camera
  frames are. Each photo is *replaced* by its degraded copy (not added beside it): the set
  has the same people, photos and pairs as ``pins``, so the two are directly comparable and
  the difference between their figures is the degradations' doing. Kind uniform over the
  seven kinds; strength drawn over ``trainer.degrade.ladder`` with the mild steps more
  likely than the severe levels (``STEP_WEIGHTS``). Generated deterministically into the
  cache (``<cache>/eval/<name>-degraded-v<N>/``), never committed.

Face size is known only where the source photo was seen: the seed set's ``index.csv``
records it; the pins crops were aligned from photos we do not have, so for them it is
unavailable (the report says so).
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engines.errors import DatasetError
from engines.imageio import IMAGE_SUFFIXES, read_image
from engines.paths import cache_root
from trainer.degrade import DEGRADATIONS, degrade_by, ladder

SUITES = ("pins", "seed", "pins-degraded")
MAIN_SUITE = "pins"
DEGRADED_VERSION = 1
# Probability of each ladder step (3 mild steps, then the seed set's levels 1-3): most camera
# frames are mildly degraded, some badly.
STEP_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.1, 0.1)
FACES_ENV = "FACEGATE_FACES"


@dataclass
class HeldoutSet:
    """Aligned crops of held-out identities, with what is known about each."""

    name: str  # how reports name it: "pins/heldout", "seed/heldout", "pins/heldout+degraded"
    root: Path
    paths: list[str]
    identities: np.ndarray
    face_px: np.ndarray | None = None  # source-photo face size, when known
    face_px_note: str = ""  # why face size is unavailable
    degradation: list[tuple[str, float]] | None = None  # (kind, strength) per crop, degraded sets
    clean: np.ndarray | None = None  # which crops are undegraded originals (None: all of them)
    _crops: np.ndarray | None = field(default=None, repr=False)
    _keys: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def crops(self) -> np.ndarray:
        """N×112×112×3 BGR uint8, read once."""
        if self._crops is None:
            crops = np.stack([read_image(p) for p in self.paths])
            if crops.shape[1:3] != (112, 112):
                raise DatasetError(f"{self.root}: evaluation expects aligned 112×112 crops, got {crops.shape[1:3]}")
            self._crops = crops
        return self._crops

    @property
    def keys(self) -> list[str]:
        """Content sha256 of every crop (what cached embeddings and scores are keyed by)."""
        if self._keys is None:
            from trainer.evaluation.store import content_keys

            self._keys = content_keys(self.paths)
        return self._keys

    @property
    def identity_count(self) -> int:
        return len(np.unique(self.identities))


def list_identity_folders(root: Path) -> tuple[list[str], np.ndarray]:
    """Image paths under ``root/<identity>/`` (sorted) and their identity names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"held-out folder {root} does not exist or is not a folder")
    paths, identities = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            paths.append(str(path))
            identities.append(folder.name)
    if len(set(identities)) < 2:
        raise DatasetError(f"{root}: evaluation needs at least two held-out identities in identity folders")
    return paths, np.array(identities)


def faces_root() -> Path:
    """The shared identity-labelled face data: ``$FACEGATE_FACES``, else ``shared/data/faces``
    beside this checkout or one of its parent folders."""
    env = os.environ.get(FACES_ENV)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parents[2]
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "data" / "faces"
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"shared face data not found: set {FACES_ENV} to the folder holding pins/ and celeba/")


def open_folder(root: Path, name: str | None = None) -> HeldoutSet:
    """Any identity folder of aligned crops; a seed-set split brings its face sizes along."""
    root = Path(root)
    paths, identities = list_identity_folders(root)
    face_px, note, clean = None, "unavailable: crops were aligned from photos not kept with them", None
    index_file = root.parent / "index.csv"
    if index_file.is_file():
        from trainer.seedset import read_index

        rows = {str(root.parent / r.path): r for r in read_index(root.parent)}
        if all(p in rows for p in paths):
            face_px, note = np.array([rows[p].face_px for p in paths], np.float64), ""
            clean = np.array([rows[p].kind == "original" for p in paths])
    return HeldoutSet(name or _display_name(root), root, paths, identities, face_px, note, clean=clean)


def _display_name(root: Path) -> str:
    root = root.resolve()
    for base, label in ((_maybe(faces_root), ""), (cache_root() / "seed", "seed")):
        if base is None:
            continue
        try:
            relative = root.relative_to(base.resolve())
        except ValueError:
            continue
        parts = relative.parts[1:] if label == "seed" else relative.parts  # drop the seed version
        return "/".join((label, *parts) if label else parts)
    try:  # reports travel: a folder in the cache is named relative to it
        return "$FACEGATE_CACHE/" + str(root.relative_to(cache_root().resolve()))
    except ValueError:
        return str(root)


def _maybe(function):
    try:
        return function()
    except DatasetError:
        return None


def open_suite(suite: str, cache: Path | None = None, progress: bool = True) -> HeldoutSet:
    """One of :data:`SUITES` (built or generated on first use)."""
    if suite == "seed":
        from trainer.seedset import build_seed_set

        return open_folder(build_seed_set(cache, progress=progress) / "heldout", "seed/heldout")
    if suite == "pins":
        return open_folder(faces_root() / "pins" / "heldout", "pins/heldout")
    if suite == "pins-degraded":
        return degraded_copy(open_suite("pins", cache), cache, progress)
    raise DatasetError(f"unknown held-out suite '{suite}'; known: {', '.join(SUITES)}")


def _draw(relative: str) -> tuple[str, int, int]:
    """(kind, ladder step, seed) for one photo, from its path alone (reproducible, order-free)."""
    rng = np.random.default_rng(zlib.crc32(f"{relative}|degraded-v{DEGRADED_VERSION}".encode()))
    kind = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))]
    step = int(rng.choice(len(STEP_WEIGHTS), p=STEP_WEIGHTS))
    return kind, step, int(rng.integers(2**31))


def degraded_copy(source: HeldoutSet, cache: Path | None = None, progress: bool = True) -> HeldoutSet:
    """``source`` with every crop replaced by one degraded copy (written once into the cache)."""
    from tqdm import tqdm

    slug = source.name.replace("/", "-")
    target = (cache or cache_root()) / "eval" / f"{slug}-degraded-v{DEGRADED_VERSION}"
    index_file = target / "index.csv"
    fingerprint = _fingerprint(source)
    done = index_file.is_file() and (target / "source.json").is_file() and \
        json.loads((target / "source.json").read_text()).get("fingerprint") == fingerprint
    if not done:
        rows = []
        for path, identity in tqdm(list(zip(source.paths, source.identities, strict=True)),
                                   desc=f"degrading {source.name}", unit="crop", disable=not progress):
            relative = str(Path(path).relative_to(source.root))
            kind, step, seed = _draw(relative)
            strength = ladder(kind)[step]
            out = target / identity / (Path(relative).stem + ".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), degrade_by(read_image(path), kind, strength, seed))
            rows.append({"path": str(out.relative_to(target)), "identity": identity, "original": relative,
                         "kind": kind, "step": step + 1, "strength": strength})
        with open(index_file, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (target / "source.json").write_text(json.dumps({"source": source.name, "fingerprint": fingerprint,
                                                        "step_weights": STEP_WEIGHTS}, indent=1) + "\n")
    with open(index_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return HeldoutSet(f"{source.name}+degraded", target, [str(target / r["path"]) for r in rows],
                      np.array([r["identity"] for r in rows]), None, source.face_px_note or
                      "unavailable: degraded copies of crops without source face sizes",
                      [(r["kind"], float(r["strength"])) for r in rows], np.zeros(len(rows), bool))


def _fingerprint(source: HeldoutSet) -> str:
    """What the degraded copy depends on: the source files (names and sizes) and the ladders."""
    import hashlib

    listing = [(str(Path(p).relative_to(source.root)), Path(p).stat().st_size) for p in source.paths]
    ladders = {kind: ladder(kind) for kind in DEGRADATIONS}
    blob = json.dumps([listing, ladders, STEP_WEIGHTS, DEGRADED_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
