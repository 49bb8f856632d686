"""One synthetic person's walk past the camera: path, face size, appearance and degradations over time.

The world is a flat floor seen by a camera above head height. A face ``FACE_WIDTH_M``
wide at depth Z is ``focal_px · FACE_WIDTH_M / Z`` pixels wide, and sits lower in the
image the nearer it is, so walking towards the camera makes a face grow and drop, then
shrink as the person walks away: the path (a curve on the floor through a nearest point)
decides how large the face gets (about 30 to 200 px). Everything that degrades a face in
a camera frame varies along the walk, each with its own strength:

- motion blur: the face's image speed times the shutter time (a per-walk shutter);
- defocus: grows with the distance from the camera's focus plane;
- exposure: a per-walk gain swinging slowly (walking through light and shade);
- compression: a JPEG quality that rises and falls (bitrate starvation around the face);
- occlusion: a hand or object covering part of the face for a while, other walkers
  and a pillar passing in front;
- appearance: several photos of the person in turn, cross-faded (a head turning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACE_WIDTH_M = 0.2
WALK_SPEED_MPS = (0.9, 1.6)
SHUTTERS_S = (1 / 200, 1 / 100, 1 / 50, 1 / 30)


@dataclass(frozen=True)
class Camera:
    """Where faces land in the image: focal length, horizon row, frame size."""

    width: int
    height: int

    @property
    def focal_px(self) -> float:
        return 1.17 * self.width

    @property
    def horizon_y(self) -> float:
        return 0.12 * self.height

    def depth_for_size(self, size_px: float) -> float:
        return self.focal_px * FACE_WIDTH_M / size_px

    def project(self, x_m: float, z_m: float, drop_m: float) -> tuple[float, float, float]:
        """Image centre (x, y) and face width in pixels of a face at floor point (x, z), ``drop_m`` below the camera."""
        return (self.width / 2 + self.focal_px * x_m / z_m, self.horizon_y + self.focal_px * drop_m / z_m,
                self.focal_px * FACE_WIDTH_M / z_m)


@dataclass
class FaceState:
    """What the renderer needs for one walker in one frame, and the truth recorded for it."""

    cx: float
    cy: float
    size_px: float  # face box width
    roll_deg: float
    depth_m: float
    photos: tuple[int, int]  # indices into the walk's photos; mixed by ``mix`` (0: first only)
    mix: float
    motion_px: tuple[float, float]  # blur vector over the shutter time
    defocus_px: float  # Gaussian sigma
    gain: float
    jpeg_quality: int  # 100 = not recompressed
    occlusion: float  # fraction of the face's width covered by a hand/object, 0 = none
    occluder_side: int  # -1 left, 1 right


class Walk:
    """A planned walk: who, when, where, and how each degradation varies; ``state(t)`` per frame."""

    def __init__(self, rng: np.random.Generator, camera: Camera, person: int, identity: str, photos: list[str],
                 start_s: float, focus_m: float, defocus_gain: float, max_size_px: float | None = None,
                 min_size_px: float = 30.0) -> None:
        self.camera = camera
        self.person, self.identity, self.photos = person, identity, photos
        self.start_s = start_s
        self.focus_m, self.defocus_gain = focus_m, defocus_gain
        max_size = max_size_px or float(rng.uniform(70, 200))
        far_z = camera.depth_for_size(min_size_px * rng.uniform(1.0, 1.4))
        near_z = camera.depth_for_size(max_size)
        self.drop_m = float(rng.uniform(0.25, 0.45))  # camera height above the face
        side = int(rng.choice([-1, 1]))
        exit_side = -side if rng.random() < 0.8 else side
        points = [self._entry(rng, far_z, near_z, side), None, self._entry(rng, far_z, near_z, exit_side)]
        mid_x = rng.uniform(-0.25, 0.25) * camera.width / camera.focal_px * near_z
        points[1] = np.array([mid_x, near_z])
        control = 2 * points[1] - (points[0] + points[2]) / 2  # the curve passes the nearest point at s = 0.5
        s = np.linspace(0, 1, 400)[:, None]
        self._curve = (1 - s) ** 2 * points[0] + 2 * s * (1 - s) * control + s**2 * points[2]
        self._curve[:, 1] = np.maximum(self._curve[:, 1], near_z * 0.95)
        steps = np.linalg.norm(np.diff(self._curve, axis=0), axis=1)
        self._arc = np.concatenate([[0.0], np.cumsum(steps)])
        self.speed = float(rng.uniform(*WALK_SPEED_MPS))
        self.duration_s = float(self._arc[-1] / self.speed)
        self.shutter_s = float(rng.choice(SHUTTERS_S))
        self.base_gain = float(rng.uniform(0.7, 1.25))
        self.gain_swing = (float(rng.uniform(0.0, 0.45)), float(rng.uniform(2.0, 6.0)), float(rng.uniform(0, 6.3)))
        self.jpeg = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(2.0, 7.0)), float(rng.uniform(0, 6.3)))
        self.roll = (float(rng.uniform(0, 10)), float(rng.uniform(2.0, 5.0)), float(rng.uniform(0, 6.3)))
        self.bob_hz = float(rng.uniform(1.6, 2.1))
        occluded_for = rng.uniform(0.8, 2.5)
        occluded_at = rng.uniform(0, max(0.1, self.duration_s - occluded_for))
        self.occlusion = (float(occluded_at), float(occluded_for), float(rng.uniform(0.0, 0.55)),
                          int(rng.choice([-1, 1])))
        switches, t = [], 0.0
        order = list(range(len(photos)))
        while t < self.duration_s:
            switches.append((t, order[len(switches) % len(order)]))
            t += rng.uniform(0.8, 2.5)
        self.switches = switches

    def _entry(self, rng: np.random.Generator, far_z: float, near_z: float, side: int) -> np.ndarray:
        """A point where a face enters or leaves the view: a side edge, or far away (a door at the back)."""
        half_view = self.camera.width / 2 / self.camera.focal_px  # x/z at the frame edge
        if rng.random() < 0.75:
            z = rng.uniform(max(near_z * 1.5, far_z * 0.35), far_z)
            return np.array([side * half_view * z * 1.15, z])
        return np.array([side * rng.uniform(0, 0.6) * half_view * far_z, far_z * 1.1])

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def _position(self, t: float) -> tuple[float, float]:
        travelled = np.clip((t - self.start_s) * self.speed, 0, self._arc[-1])
        return (float(np.interp(travelled, self._arc, self._curve[:, 0])),
                float(np.interp(travelled, self._arc, self._curve[:, 1])))

    def _image(self, t: float) -> tuple[float, float, float, float]:
        x, z = self._position(t)
        bob = 0.012 * np.sin(2 * np.pi * self.bob_hz * (t - self.start_s))
        cx, cy, size = self.camera.project(x, z, self.drop_m + bob)
        return cx, cy, size, z

    def active(self, t: float) -> bool:
        return self.start_s <= t <= self.end_s

    def visible_span(self, step_s: float = 0.1) -> tuple[float, float]:
        """First and last time the face is at least partly inside the frame (the walk starts and ends outside)."""
        times = np.arange(self.start_s, self.end_s, step_s)
        inside = []
        for t in times:
            cx, cy, size, _ = self._image(float(t))
            half_w, half_h = size / 2, size * 0.65
            inside.append(cx + half_w > 0 and cx - half_w < self.camera.width and cy + half_h > 0
                          and cy - half_h < self.camera.height)
        seen = times[np.nonzero(inside)[0]]
        return (float(seen[0]), float(seen[-1])) if len(seen) else (self.start_s, self.start_s)

    def state(self, t: float) -> FaceState:
        u = t - self.start_s
        cx, cy, size, z = self._image(t)
        nx, ny, _, _ = self._image(t + 0.02)
        px, py, _, _ = self._image(t - 0.02)
        velocity = ((nx - px) / 0.04, (ny - py) / 0.04)
        motion = (velocity[0] * self.shutter_s, velocity[1] * self.shutter_s)
        defocus = self.defocus_gain * self.camera.focal_px * abs(1 / z - 1 / self.focus_m) / 1000
        amp, period, phase = self.gain_swing
        gain = self.base_gain * float(np.exp(amp * np.sin(2 * np.pi * u / period + phase)))
        depth, period, phase = self.jpeg
        quality = int(100 - depth * 85 * max(0.0, np.sin(2 * np.pi * u / period + phase)))
        amp, period, phase = self.roll
        roll = amp * float(np.sin(2 * np.pi * u / period + phase))
        at, length, strength, side = self.occlusion
        ramp = min(max(0.0, u - at), max(0.0, at + length - u), 0.3) / 0.3
        index = max(i for i, (when, _) in enumerate(self.switches) if when <= max(u, 0.0))
        current = self.switches[index][1]
        previous = self.switches[index - 1][1] if index > 0 else current
        mix = max(0.0, 1 - (u - self.switches[index][0]) / 0.25) if index > 0 else 0.0
        return FaceState(cx, cy, size, roll, z, (current, previous), mix, motion, defocus, gain, quality,
                         strength * ramp, side)
