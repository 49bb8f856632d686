"""The scene people walk through: a background, a foreground pillar, lighting drift and sensor noise.

The background is generated (a textured wall with doors and posters, a floor in
perspective), its wall texture taken from a real video (the wooden wall beside the
face in ``WolfgangLanger_Pexels.mp4``, a strip with no face in it), so the detector
sees real-camera texture rather than flat colour. What varies over time is what a
motion test must not mistake for a person: sensor noise (fresh every frame) and a slow
global lighting change (clouds, lamps warming up).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np

NOISE_BANK = 12  # distinct noise fields, picked at random per frame (cheaper than fresh noise at 1080p)
TEXTURE_STRIP_PX = 150  # left strip of the 640×360 sample frame: wall only, no face


def wall_texture(video_path: str) -> np.ndarray:
    """The face-free left strip of the sample video's first frame (BGR)."""
    with av.open(video_path) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    return frame[:, :TEXTURE_STRIP_PX].copy()


@dataclass(frozen=True)
class Pillar:
    """A vertical pillar in front of the walkers who are farther than ``depth``."""

    x1: int
    x2: int
    depth: float
    colour: tuple[int, int, int]


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled smoothly."""
    coarse = rng.uniform(-1, 1, (max(2, cells * height // width), cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def render_background(rng: np.random.Generator, width: int, height: int, horizon_y: float,
                      texture: np.ndarray) -> np.ndarray:
    """A wall (real texture, tinted), doors and posters on it, and a floor in perspective."""
    floor_y = int(height * 0.62)
    tile = cv2.resize(texture, (round(texture.shape[1] * floor_y / texture.shape[0]), floor_y),
                      interpolation=cv2.INTER_LINEAR)
    tiles = [tile if i % 2 == 0 else tile[:, ::-1] for i in range(width // tile.shape[1] + 2)]
    wall = np.hstack(tiles)[:, :width].astype(np.float32)
    tint = rng.uniform(0.7, 1.35, 3).astype(np.float32)
    wall = wall * tint * rng.uniform(0.8, 1.2)
    image = np.zeros((height, width, 3), np.float32)
    image[:floor_y] = wall
    floor_colour = rng.uniform(60, 150, 3)
    image[floor_y:] = floor_colour
    shade = _smooth_field(rng, height, width, 6)[..., None]
    image[floor_y:] *= (1 + 0.15 * shade[floor_y:])
    vanish = (width * rng.uniform(0.35, 0.65), horizon_y)
    for k in range(-12, 13):  # floor tile lines towards the vanishing point
        x_bottom = width / 2 + k * width / 8
        t = (floor_y - vanish[1]) / (height - vanish[1])
        x_top = vanish[0] + (x_bottom - vanish[0]) * t
        cv2.line(image, (round(x_top), floor_y), (round(x_bottom), height), floor_colour * 0.7, 2, cv2.LINE_AA)
    for _ in range(rng.integers(2, 5)):  # doors and posters
        w = int(width * rng.uniform(0.05, 0.14))
        h = int(floor_y * rng.uniform(0.3, 0.85))
        x = int(rng.uniform(0, width - w))
        y = floor_y - h if rng.random() < 0.5 else int(rng.uniform(0.05, 0.3) * floor_y)
        colour = rng.uniform(30, 230, 3)
        cv2.rectangle(image, (x, y), (x + w, min(y + h, floor_y)), colour, -1)
        cv2.rectangle(image, (x, y), (x + w, min(y + h, floor_y)), colour * 0.5, max(2, width // 400))
    vignette = 1 - 0.25 * (np.linspace(-1, 1, width)[None, :] ** 2 + np.linspace(-1, 1, height)[:, None] ** 2) / 2
    image *= vignette[..., None].astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_pillar(rng: np.random.Generator, width: int) -> Pillar:
    w = int(width * rng.uniform(0.03, 0.06))
    x = int(rng.uniform(0.15, 0.85) * width)
    return Pillar(x, x + w, float(rng.uniform(3.0, 6.0)), tuple(int(c) for c in rng.uniform(60, 200, 3)))


def draw_pillar(frame: np.ndarray, pillar: Pillar) -> None:
    frame[:, pillar.x1:pillar.x2] = pillar.colour
    edge = max(1, (pillar.x2 - pillar.x1) // 6)
    frame[:, pillar.x1:pillar.x1 + edge] = [int(c * 0.6) for c in pillar.colour]


class Lighting:
    """Slow global brightness drift: a sum of two slow sines, applied through a lookup table."""

    def __init__(self, rng: np.random.Generator, amplitude: float) -> None:
        self.amplitude = amplitude
        self.periods = rng.uniform(20, 90, 2)
        self.phases = rng.uniform(0, 2 * np.pi, 2)
        self._levels = np.arange(256, dtype=np.float32)

    def gain(self, t: float) -> float:
        waves = np.sin(2 * np.pi * t / self.periods + self.phases)
        return float(1 + self.amplitude * waves.mean())

    def apply(self, frame: np.ndarray, t: float) -> np.ndarray:
        table = np.clip(self._levels * self.gain(t), 0, 255).astype(np.uint8)
        return cv2.LUT(frame, table)


class SensorNoise:
    """Gaussian sensor noise of standard deviation ``sigma``, a different field every frame."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, sigma: float) -> None:
        self.rng = rng
        self.fields = [rng.normal(0, sigma, (height, width, 3)).astype(np.int16) for _ in range(NOISE_BANK)] \
            if sigma > 0 else []

    def apply(self, frame: np.ndarray) -> np.ndarray:
        if not self.fields:
            return frame
        return cv2.add(frame, self.fields[int(self.rng.integers(len(self.fields)))], dtype=cv2.CV_8U)
