"""Graded, realistic degradations of real aligned face crops.

A camera produces all of these: defocus and motion (blur), distance (downscale), bitrate
(JPEG), low light (noise, under-exposure), glare (over-exposure) and hands or objects
(occlusion). Each kind is one function of one strength parameter (a blur sigma, a JPEG
quality, …), deterministic for a given seed, so every derived set is reproducible.

Two scales of strength:

- ``LEVELS`` 1 … 3, the seed set's (``degrade(crop, kind, level, seed)``): even level 1
  is visible at 112×112 and already costs a recogniser a lot (e.g. 15% exposure).
- ``ladder(kind)``: the steps used to measure how quality scores fall, mildest first:
  ``MILD_STEPS`` (strengths at which SFace's mean genuine similarity on held-out faces
  already falls, measured, see ``MILD_STEPS``) followed by the three levels.

The seed set's files depend only on the level parameters and on the order of random
draws inside each function; both are unchanged since seed set v7.
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

LEVEL_PARAMS: dict[str, dict[int, float]] = {
    "blur": BLUR_SIGMA,
    "downscale": DOWNSCALE_FACTOR,
    "jpeg": JPEG_QUALITY,
    "noise": NOISE_SIGMA,
    "occlusion": OCCLUDED_FRACTION,
    "underexposure": UNDER_GAIN,
    "overexposure": OVER_GAIN,
}

# Milder steps, mildest first, below level 1: where SFace's mean genuine similarity (a degraded
# held-out crop against the clean photos of its person) has fallen by about 3%, 8% and 15%
# (under-exposure: 3%, 6% and 8%, as its level 1 costs only 12%). Read off a scan of each
# parameter on 200 pins/heldout crops (10 per person; clean mean similarity 0.503), e.g. blur
# sigma 1.0 / 1.5 / 2.0 → 0.490 / 0.463 / 0.426 (level 1, sigma 3: 0.337); JPEG quality
# 50 / 25 / 15 → 0.487 / 0.462 / 0.429 (level 1, quality 10: 0.385). Every evaluation report
# measures the similarity at each step again (``degradation`` block).
MILD_STEPS: dict[str, tuple[float, ...]] = {
    "blur": (1.0, 1.5, 2.0),
    "downscale": (2.0, 2.5, 3.0),
    "jpeg": (50, 25, 15),
    "noise": (8.0, 11.0, 17.0),
    "occlusion": (0.03, 0.08, 0.12),
    "underexposure": (0.4, 0.25, 0.2),
    "overexposure": (1.3, 1.5, 1.7),
}


def _blur(crop: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(crop, (0, 0), sigma)


def _downscale(crop: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    h, w = crop.shape[:2]
    small = cv2.resize(crop, (max(1, int(w / factor)), max(1, int(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(crop: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _noise(crop: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = crop.astype(np.float32) + rng.normal(0.0, sigma, crop.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _occlusion(crop: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A flat dark patch (a hand, a scarf, a pillar) over part of the face."""
    h, w = crop.shape[:2]
    patch_h = round(float(h * np.sqrt(fraction) * rng.uniform(0.8, 1.25)))
    patch_h = min(h, max(1, patch_h))
    patch_w = min(w, max(1, round(fraction * h * w / patch_h)))
    y = int(rng.integers(0, h - patch_h + 1))
    x = int(rng.integers(0, w - patch_w + 1))
    out = crop.copy()
    out[y : y + patch_h, x : x + patch_w] = rng.integers(20, 90, size=3, dtype=np.uint8)
    return out


def _underexposure(crop: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    dark = np.round(crop.astype(np.float32) * gain)
    return np.clip(dark + rng.normal(0.0, 2.0, crop.shape), 0, 255).astype(np.uint8)


def _overexposure(crop: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)


_APPLY = {
    "blur": _blur,
    "downscale": _downscale,
    "jpeg": _jpeg,
    "noise": _noise,
    "occlusion": _occlusion,
    "underexposure": _underexposure,
    "overexposure": _overexposure,
}
DEGRADATIONS = tuple(_APPLY)


def ladder(kind: str) -> tuple[float, ...]:
    """Strength parameters of ``kind`` from mildest to most severe: mild steps, then levels 1-3."""
    _check_kind(kind)
    return (*MILD_STEPS[kind], *(LEVEL_PARAMS[kind][level] for level in LEVELS))


def degrade_by(crop: np.ndarray, kind: str, strength: float, seed: int) -> np.ndarray:
    """Apply one degradation kind with its parameter set to ``strength``, reproducibly for ``seed``."""
    _check_kind(kind)
    return _APPLY[kind](crop, strength, np.random.default_rng(seed))


def degrade(crop: np.ndarray, kind: str, level: int, seed: int) -> np.ndarray:
    """Apply one degradation kind at one of the seed set's strengths (``LEVELS``)."""
    _check_kind(kind)
    if level not in LEVELS:
        raise ValueError(f"degradation level must be one of {LEVELS}, got {level}")
    return degrade_by(crop, kind, LEVEL_PARAMS[kind][level], seed)


def _check_kind(kind: str) -> None:
    if kind not in _APPLY:
        raise ValueError(f"unknown degradation '{kind}'; known: {', '.join(_APPLY)}")
