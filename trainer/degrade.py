"""Graded, realistic degradations of real aligned face crops.

Each kind has three strengths (1 mild … 3 severe); even the mild one is chosen to be
visible at 112×112 and to cost a recogniser something, so every degraded crop is a
worse sample than its original. A camera produces all of these:
defocus and motion (blur), distance (downscale), bitrate (JPEG), low light (noise,
under-exposure), glare (over-exposure) and hands or objects (occlusion). Deterministic
for a given seed, so the seed set is reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np

LEVELS = (1, 2, 3)
BLUR_SIGMA = {1: 3.0, 2: 4.5, 3: 7.0}
DOWNSCALE_FACTOR = {1: 4, 2: 6, 3: 10}
JPEG_QUALITY = {1: 10, 2: 6, 3: 3}
NOISE_SIGMA = {1: 28.0, 2: 45.0, 3: 70.0}
OCCLUDED_FRACTION = {1: 0.2, 2: 0.4, 3: 0.6}
UNDER_GAIN = {1: 0.15, 2: 0.08, 3: 0.04}
OVER_GAIN = {1: 2.6, 2: 3.3, 3: 4.2}


def blur(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(crop, (0, 0), BLUR_SIGMA[level])


def downscale(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    h, w = crop.shape[:2]
    f = DOWNSCALE_FACTOR[level]
    small = cv2.resize(crop, (w // f, h // f), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[level]])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def noise(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    noisy = crop.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA[level], crop.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def occlusion(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """A flat dark patch (a hand, a scarf, a pillar) over part of the face."""
    h, w = crop.shape[:2]
    fraction = OCCLUDED_FRACTION[level]
    patch_h = round(float(h * np.sqrt(fraction) * rng.uniform(0.8, 1.25)))
    patch_h = min(h, max(1, patch_h))
    patch_w = min(w, max(1, round(fraction * h * w / patch_h)))
    y = int(rng.integers(0, h - patch_h + 1))
    x = int(rng.integers(0, w - patch_w + 1))
    out = crop.copy()
    out[y : y + patch_h, x : x + patch_w] = rng.integers(20, 90, size=3, dtype=np.uint8)
    return out


def underexposure(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    dark = np.round(crop.astype(np.float32) * UNDER_GAIN[level])
    return np.clip(dark + rng.normal(0.0, 2.0, crop.shape), 0, 255).astype(np.uint8)


def overexposure(crop: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(crop.astype(np.float32) * OVER_GAIN[level], 0, 255).astype(np.uint8)


DEGRADATIONS = {
    "blur": blur,
    "downscale": downscale,
    "jpeg": jpeg,
    "noise": noise,
    "occlusion": occlusion,
    "underexposure": underexposure,
    "overexposure": overexposure,
}


def degrade(crop: np.ndarray, kind: str, level: int, seed: int) -> np.ndarray:
    """Apply one degradation kind at one strength, reproducibly for ``seed``."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation '{kind}'; known: {', '.join(DEGRADATIONS)}")
    if level not in LEVELS:
        raise ValueError(f"degradation level must be one of {LEVELS}, got {level}")
    return DEGRADATIONS[kind](crop, level, np.random.default_rng(seed))
