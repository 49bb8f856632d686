"""Synthetic walk-by videos of real, held-out identities, with ground truth.

People from an identity-folder dataset (aligned 112×112 crops, e.g. the Pins held-out
split) walk past a camera in a generated scene: :mod:`bench.walkby.walker` plans each
walk (path, face size, degradations over time), :mod:`bench.walkby.render` draws it,
:mod:`bench.walkby.video` encodes H.264 and writes the truth, and :func:`generate` makes a
set of videos once and caches them (videos are derived from the photos: they stay in the
cache, never in the repository).

    identities = load_identities(root)
    gallery = choose_gallery(identities, embedder.embed)      # one enrolment photo each, kept out of walks
    videos = generate([VideoSpec(seed=i, walkbys=30) for i in range(4)], identities, gallery, out_dir)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from bench.walkby.video import IdentityPool, VideoSpec, render_video

GENERATOR_VERSION = 5  # bump when rendering changes, so cached videos are remade
GALLERY_CANDIDATES = 40  # the enrolment photo is chosen among this many photos of each person
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def load_identities(root: Path, limit: int | None = None) -> dict[str, list[Path]]:
    """identity → sorted photo paths, from ``root/<identity>/<photo>`` (identities with < 3 photos left out)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no identity folder at {root}")
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(photos) >= 3:
            found[folder.name] = photos
    if not found:
        raise FileNotFoundError(f"no identity folders with at least 3 photos under {root}")
    names = sorted(found)[:limit] if limit else sorted(found)
    return {name: found[name] for name in names}


def choose_gallery(identities: dict[str, list[Path]], embed: Callable[[np.ndarray], np.ndarray]) -> dict[str, Path]:
    """One enrolment photo per identity: the most typical of its first photos.

    Typical = highest mean cosine similarity to the person's other candidate photos, as
    an operator would enrol a clear, ordinary photo rather than an odd one.
    """
    gallery = {}
    for name, photos in identities.items():
        candidates = photos[:GALLERY_CANDIDATES]
        crops = np.stack([cv2.imread(str(p), cv2.IMREAD_COLOR) for p in candidates])
        vectors = embed(crops)
        similarity = vectors @ vectors.T
        gallery[name] = candidates[int(np.argmax(similarity.sum(axis=1)))]
    return gallery


def walk_photos(identities: dict[str, list[Path]], gallery: dict[str, Path]) -> dict[str, list[Path]]:
    """Photos a walker may show: all but the gallery photo."""
    return {name: [p for p in photos if p != gallery[name]] for name, photos in identities.items()}


def _cache_key(specs: list[VideoSpec], photos: dict[str, list[Path]]) -> str:
    listing = {name: [str(p) for p in paths] for name, paths in sorted(photos.items())}
    blob = json.dumps({"version": GENERATOR_VERSION, "specs": [asdict(s) for s in specs], "photos": listing})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _render_one(args: tuple) -> dict:
    spec, photos, start, texture, out, first_person = args
    return render_video(spec, IdentityPool(photos, start), texture, out, first_person)


def generate(specs: list[VideoSpec], identities: dict[str, list[Path]], gallery: dict[str, Path], out_dir: Path,
             texture: np.ndarray, jobs: int = 1, progress: bool = False) -> list[tuple[Path, dict]]:
    """Render the videos of ``specs`` (cached under ``out_dir/<key>/``); return (video, truth) pairs.

    Person numbers run on across videos, and identities rotate across videos, so every
    identity walks about equally often.
    """
    photos = walk_photos(identities, gallery)
    folder = Path(out_dir) / _cache_key(specs, photos)
    tasks, first_person, start = [], 0, 0
    for index, spec in enumerate(specs):
        out = folder / f"walkby_{index:02d}.mp4"
        tasks.append((spec, photos, start, texture, out, first_person))
        first_person += 1000
        start += spec.walkbys if spec.schedule == "crowd" else 7
    results: list[tuple[Path, dict] | None] = [None] * len(tasks)
    todo = []
    for i, task in enumerate(tasks):
        out = task[4]
        if out.is_file() and out.with_suffix(".json").is_file():
            results[i] = (out, json.loads(out.with_suffix(".json").read_text()))
        else:
            todo.append(i)
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="walk-by videos", unit="video", disable=not progress)
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(min(jobs, len(todo))) as pool:
                for i, truth in zip(todo, pool.map(_render_one, [tasks[i] for i in todo]), strict=True):
                    results[i] = (tasks[i][4], truth)
                    bar.update(1)
        else:
            for i in todo:
                results[i] = (tasks[i][4], _render_one(tasks[i]))
                bar.update(1)
        bar.close()
    return [r for r in results if r is not None]


__all__ = ["IdentityPool", "VideoSpec", "choose_gallery", "generate", "load_identities", "walk_photos"]
