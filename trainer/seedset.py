"""The seed set: an identity-folder dataset of aligned 112×112 crops from real media.

Layout (under ``<cache>/seed/v<SEED_VERSION>``)::

    train/<identity>/<media>_f<frame>.png            undegraded aligned crops
    train/<identity>/<media>_f<frame>__<kind><level>.png   graded degradations
    heldout/<identity>/...                           identities never used in training
    graded/<identity>/...                            held-out crops in every degradation
    index.csv                                        one row per crop (provenance)
    PROVENANCE.md                                    sources and licences
    summary.json                                     counts, skipped frames

Video frames of one person form one identity; stills of a known person join that
person; faces in other stills become one-image identities (negatives only).
"""

from __future__ import annotations

import csv
import json
import shutil
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.alignment import align_face
from engines.detector import Detector
from engines.imageio import read_image
from engines.paths import cache_root
from engines.samples import ARCHIVES, MEDIA, MediaFile, gather_media
from trainer.degrade import DEGRADATIONS, LEVELS, degrade
from trainer.videos import sampled_frames

SEED_VERSION = 7
MIN_SCORE = 0.8
MIN_FACE_PX = 24
GRADED_PER_IDENTITY = 12  # held-out crops degraded in every way (the graded split), per identity


@dataclass
class CropRow:
    """One crop of the seed set and where it came from."""

    path: str
    split: str
    identity: str
    media: str
    frame: int
    kind: str  # "original" or a degradation kind
    level: int
    original: str  # path of the undegraded crop it derives from (itself when original)
    det_score: float
    face_px: float


def seed_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "seed" / f"v{SEED_VERSION}"


def _faces_of(detector: Detector, image: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    faces = detector.detect(image)
    keep = (faces.scores >= MIN_SCORE) & (faces.sizes_px >= MIN_FACE_PX)
    faces = faces.take(np.nonzero(keep)[0])
    return [(faces.landmarks_px[i], float(faces.scores[i]), float(faces.sizes_px[i])) for i in range(len(faces))]


def _largest(found: list[tuple[np.ndarray, float, float]]) -> list[tuple[np.ndarray, float, float]]:
    return [max(found, key=lambda f: f[2])] if found else []


def _crops_of(item: MediaFile, path: Path, detector: Detector, counts: Counter) -> list[tuple[int, int, tuple]]:
    """(frame, face number, face) for each face kept from one media file."""
    kept: list[tuple[int, int, tuple]] = []
    if item.kind == "video":
        for index, frame in sampled_frames(path, item.frame_step):
            counts[f"{item.key}:frames"] += 1
            found = _largest(_faces_of(detector, frame))
            if not found:
                counts[f"{item.key}:frames_without_face"] += 1
            for face in found:
                kept.append((index, 0, (frame, *face)))
    else:
        image = read_image(path)
        found = _faces_of(detector, image)
        if item.identity:
            found = _largest(found)
        if not found:
            counts[f"{item.key}:images_without_face"] += 1
        for number, face in enumerate(found):
            kept.append((0, number, (image, *face)))
    return kept


def build_seed_set(cache: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Gather the media and build the seed set; return its folder (reused when complete)."""
    from tqdm import tqdm

    root = cache or cache_root()
    target = seed_dir(root)
    if (target / "summary.json").is_file() and not force:
        return target
    media_paths = gather_media(root / "media", progress=progress)
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    detector = Detector(max_side=1280, score_threshold=0.5)
    rows: list[CropRow] = []
    counts: Counter = Counter()
    for item in tqdm(MEDIA, desc="seed set: detect + align", unit="file", disable=not progress):
        for frame_index, number, (image, landmarks, score, size) in _crops_of(
            item, media_paths[item.key], detector, counts
        ):
            identity = item.identity or f"single_{item.key}_{number}"
            rel = Path(item.split) / identity / f"{item.key}_f{frame_index:04d}_{number}.png"
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(work / rel), align_face(image, landmarks))
            rows.append(CropRow(str(rel), item.split, identity, item.key, frame_index, "original", 0,
                                str(rel), round(score, 4), round(size, 1)))
    rows.extend(_degrade_all(work, rows, progress))
    _write_index(work, rows)
    _write_provenance(work)
    summary = _summary(rows, counts)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target


def _degrade_plan(rows: list[CropRow]) -> list[tuple[CropRow, tuple[tuple[str, int], ...], str]]:
    """Which crops are degraded, how (kind, level), and into which split.

    ``train`` and ``heldout`` stay at least half clean, as real data is: every original
    crop gets one degraded copy, kinds and levels round-robin, so each identity holds every
    kind at every strength without degraded copies dominating it. ``graded`` holds a few
    held-out crops per identity in every kind at every level, for measuring how scores
    fall with each degradation (kept apart so it does not skew the held-out pairs).
    """
    by_identity: dict[tuple[str, str], list[CropRow]] = defaultdict(list)
    for row in rows:
        by_identity[(row.split, row.identity)].append(row)
    combos = [(kind, level) for level in LEVELS for kind in DEGRADATIONS]
    plan: list[tuple[CropRow, tuple[tuple[str, int], ...], str]] = []
    for (split, identity), members in sorted(by_identity.items()):
        plan.extend((row, (combos[n % len(combos)],), split) for n, row in enumerate(members))
        if split == "heldout" and not identity.startswith("single_"):
            picks = np.linspace(0, len(members) - 1, min(GRADED_PER_IDENTITY, len(members)))
            plan.extend((members[i], tuple(combos), "graded")
                        for i in sorted(set(picks.round().astype(int).tolist())))
    return plan


def _degrade_all(work: Path, rows: list[CropRow], progress: bool) -> list[CropRow]:
    from tqdm import tqdm

    made: list[CropRow] = []
    for row, combos, split in tqdm(_degrade_plan(rows), desc="seed set: degrade", unit="crop",
                                   disable=not progress):
        crop = cv2.imread(str(work / row.path))
        for kind, level in combos:
            seed = zlib.crc32(f"{row.path}|{kind}|{level}".encode())
            rel = Path(split) / row.identity / f"{Path(row.path).stem}__{kind}{level}.png"
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(work / rel), degrade(crop, kind, level, seed))
            made.append(CropRow(str(rel), split, row.identity, row.media, row.frame, kind, level,
                                row.path, row.det_score, row.face_px))
    return made


def _write_index(work: Path, rows: list[CropRow]) -> None:
    with open(work / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def read_index(seed: Path) -> list[CropRow]:
    """Rows of a built seed set's ``index.csv``."""
    with open(seed / "index.csv", newline="") as handle:
        return [
            CropRow(**{**r, "frame": int(r["frame"]), "level": int(r["level"]),
                       "det_score": float(r["det_score"]), "face_px": float(r["face_px"])})
            for r in csv.DictReader(handle)
        ]


def _write_provenance(work: Path) -> None:
    lines = [
        "# Seed set provenance",
        "",
        "Built by `trainer samples` from media shipped in registry packages; every file was",
        "checked against the sha256 in `engines/samples.py`. Crops are aligned 112×112 faces",
        "(YuNet detector, ArcFace template). Degraded crops derive from real crops",
        "(`trainer/degrade.py`). For research and testing; follow each source's licence.",
        "",
        "## Archives",
        "",
        "| requirement | file | sha256 | licence |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{a.requirement}` | {a.filename} | `{a.sha256[:16]}…` | {a.licence} |" for a in ARCHIVES.values()]
    lines += ["", "## Media", "", "| key | file | identity | split | credit |", "|---|---|---|---|---|"]
    lines += [
        f"| {m.key} | `{m.member}` | {m.identity or '(one per face)'} | {m.split} | {m.credit} |" for m in MEDIA
    ]
    (work / "PROVENANCE.md").write_text("\n".join(lines) + "\n")


def _summary(rows: list[CropRow], counts: Counter) -> dict:
    per_identity: dict[str, dict] = {}
    for row in rows:
        entry = per_identity.setdefault(f"{row.split}/{row.identity}", {"original": 0, "degraded": 0})
        entry["original" if row.kind == "original" else "degraded"] += 1
    return {
        "seed_version": SEED_VERSION,
        "crops": len(rows),
        "identities": {s: sum(1 for k in per_identity if k.startswith(s + "/"))
                       for s in ("train", "heldout", "graded")},
        "per_identity": per_identity,
        "skipped": dict(sorted(counts.items())),
        "degradations": sorted(DEGRADATIONS),
        "levels": list(LEVELS),
    }
