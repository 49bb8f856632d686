"""Plan, render and encode one walk-by video, with its ground truth.

``plan_walks`` decides who walks when: ``crowd`` keeps two to four people in view at once
(paths cross, people enter and leave) with a lull of an empty scene every 6 to 10 walkers,
``sparse`` sends one or two at a time with empty
scene between them (people in view about ``occupancy`` of the time), ``empty`` sends
nobody. ``render_video`` draws every frame (walkers far to near, the pillar in front of
those behind it, then lighting and sensor noise) and encodes H.264 with PyAV's libx264,
as a camera would (rate-capped, 2 s GOP, no B-frames). The ground truth per walker is the time span,
and per frame the face box, landmarks and the degradation strengths; it is written as
JSON beside the video.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from bench.walkby.render import (
    Appearance,
    body_boxes,
    covered_fraction,
    draw_body,
    draw_face,
    face_mask,
    truth_box,
    truth_landmarks,
)
from bench.walkby.scene import Lighting, SensorNoise, draw_pillar, make_pillar, render_background
from bench.walkby.walker import Camera, Walk

PHOTOS_PER_WALK = (3, 5)


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides one video; the same spec always gives the same video."""

    seed: int
    width: int = 1280
    height: int = 720
    fps: int = 25
    schedule: str = "crowd"  # crowd | sparse | empty
    walkbys: int = 10  # crowd: how many walk past
    lulls: bool = True  # crowd: every 6 to 10 walkers, the scene empties for 3 to 8 s (motion gating matters)
    duration_s: float = 60.0  # sparse and empty: video length
    occupancy: float = 0.25  # sparse: fraction of the time someone is in view
    first_arrival_s: float = 0.5
    max_face_px: float = 200.0  # the nearest point of each walk gives a face of 70..max_face_px
    bitrate_kbps: int | None = None  # None: drawn per video, 0.8..3 Mbit/s at 720p (scaled by pixel count)
    noise_sigma: float | None = None  # None: drawn per video from 1.5..4
    lighting_amplitude: float = 0.12


@dataclass
class IdentityPool:
    """Identities to draw walkers from, in a fixed rotation (each appears about equally often)."""

    photos: dict[str, list[Path]]  # identity → photos usable in walks (the gallery photo excluded)
    start: int = 0  # where in the rotation this video begins
    order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.order = self.order or sorted(self.photos)
        self._next = self.start

    def take(self) -> str:
        name = self.order[self._next % len(self.order)]
        self._next += 1
        return name


def plan_walks(spec: VideoSpec, pool: IdentityPool, rng: np.random.Generator, camera: Camera,
               first_person: int = 0) -> list[Walk]:
    focus = camera.depth_for_size(rng.uniform(60, 120))
    defocus_gain = float(rng.uniform(1.0, 6.0))
    walks: list[Walk] = []

    def spawn(at: float) -> Walk:
        identity = pool.take()
        choices = pool.photos[identity]
        count = min(len(choices), int(rng.integers(PHOTOS_PER_WALK[0], PHOTOS_PER_WALK[1] + 1)))
        photos = [str(choices[i]) for i in rng.choice(len(choices), count, replace=False)]
        walk = Walk(rng, camera, first_person + len(walks), identity, photos, at, focus, defocus_gain,
                    max_size_px=float(rng.uniform(min(70.0, spec.max_face_px), spec.max_face_px)))
        walks.append(walk)
        return walk

    if spec.schedule == "crowd":
        t, step = spec.first_arrival_s, 0.1
        next_lull = int(rng.integers(6, 11))
        while len(walks) < spec.walkbys:
            if spec.lulls and len(walks) >= next_lull:
                t = max(w.end_s for w in walks) + float(rng.uniform(3.0, 8.0))
                next_lull += int(rng.integers(6, 11))
            active = sum(1 for w in walks if w.start_s <= t < w.end_s)
            if active < 2 or (active < 4 and rng.random() < step / 2.5):
                spawn(t)
            t += step
    elif spec.schedule == "sparse":
        t = spec.first_arrival_s
        while t < spec.duration_s:
            group = [spawn(t)]
            if rng.random() < 0.4:
                group.append(spawn(t + rng.uniform(0.3, 1.5)))
            spans = [w.visible_span() for w in group]
            seen_from, seen_until = min(a for a, _ in spans), max(b for _, b in spans)
            gap = (seen_until - seen_from) * (1 - spec.occupancy) / spec.occupancy * rng.uniform(0.6, 1.4)
            t += (seen_until + gap) - seen_from  # the next group comes into view ``gap`` after this one left
    elif spec.schedule != "empty":
        raise ValueError(f"unknown schedule {spec.schedule!r} (crowd, sparse, empty)")
    return walks


def video_length_s(spec: VideoSpec, walks: list[Walk]) -> float:
    if spec.schedule == "crowd":
        return max(w.end_s for w in walks) + 1.0
    return spec.duration_s


def render_video(spec: VideoSpec, pool: IdentityPool, texture: np.ndarray, out: Path, first_person: int = 0,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Write ``out`` (H.264 MP4) and ``out.with_suffix('.json')`` (ground truth); return the truth."""
    rng = np.random.default_rng(spec.seed)
    camera = Camera(spec.width, spec.height)
    walks = plan_walks(spec, pool, rng, camera, first_person)
    length_s = video_length_s(spec, walks)
    frames = round(length_s * spec.fps)
    background = render_background(rng, spec.width, spec.height, camera.horizon_y, texture)
    pillar = make_pillar(rng, spec.width)
    draw_pillar(background, pillar)  # the pillar is drawn again over walkers behind it
    lighting = Lighting(rng, spec.lighting_amplitude)
    noise_sigma = spec.noise_sigma if spec.noise_sigma is not None else float(rng.uniform(1.5, 4.0))
    noise = SensorNoise(rng, spec.width, spec.height, noise_sigma)
    pixels = spec.width * spec.height / (1280 * 720)
    bitrate_kbps = spec.bitrate_kbps or int(rng.uniform(800, 3000) * pixels)
    mask = face_mask()
    looks = {w.person: Appearance(rng, [cv2.imread(p, cv2.IMREAD_COLOR) for p in w.photos]) for w in walks}
    truth = {w.person: {"person": w.person, "identity": w.identity, "photos": [Path(p).name for p in w.photos],
                        "start_s": w.start_s, "end_s": min(w.end_s, length_s), "frames": [], "boxes": [],
                        "landmarks": [], "size_px": [], "motion_px": [], "defocus_px": [], "gain": [],
                        "jpeg_quality": [], "occlusion": [], "covered": []} for w in walks}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    occupied = 0
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        # Rate-capped like a camera's encoder: a busy or noisy scene costs quality, not bits.
        stream.bit_rate = bitrate_kbps * 1000
        stream.options = {"preset": "veryfast", "maxrate": f"{bitrate_kbps}k", "bufsize": f"{2 * bitrate_kbps}k",
                          "g": str(2 * spec.fps), "bf": "0"}
        for index in range(frames):
            t = index / spec.fps
            frame = background.copy()
            states = sorted(((w, w.state(t)) for w in walks if w.active(t)), key=lambda ws: -ws[1].depth_m)
            pillar_drawn = False
            visible = False
            boxes = {}
            for walk, state in states:
                if not pillar_drawn and state.depth_m < pillar.depth:
                    draw_pillar(frame, pillar)
                    pillar_drawn = True
                draw_body(frame, state, looks[walk.person])
                matrix = draw_face(frame, state, looks[walk.person], mask)
                box = truth_box(matrix)
                boxes[walk.person] = box
                if box[2] <= 0 or box[0] >= spec.width or box[3] <= 0 or box[1] >= spec.height:
                    continue
                visible = True
                record = truth[walk.person]
                record["frames"].append(index)
                record["boxes"].append([round(float(v), 1) for v in box])
                record["landmarks"].append([round(float(v), 1) for v in truth_landmarks(matrix).ravel()])
                record["size_px"].append(round(state.size_px, 1))
                record["motion_px"].append(round(float(np.hypot(*state.motion_px)), 2))
                record["defocus_px"].append(round(state.defocus_px, 2))
                record["gain"].append(round(state.gain, 3))
                record["jpeg_quality"].append(state.jpeg_quality)
                record["occlusion"].append(round(state.occlusion, 3))
            for walk, state in states:  # what nearer walkers and the pillar hide of each face
                if not truth[walk.person]["frames"] or truth[walk.person]["frames"][-1] != index:
                    continue  # not in view in this frame
                covers = [b for _, nearer in states if nearer.depth_m < state.depth_m
                          for b in body_boxes(nearer, spec.height)]
                if state.depth_m > pillar.depth:
                    covers.append((pillar.x1, 0, pillar.x2, spec.height))
                truth[walk.person]["covered"].append(round(covered_fraction(boxes[walk.person], covers), 3))
            if not pillar_drawn:
                draw_pillar(frame, pillar)
            occupied += visible
            frame = noise.apply(lighting.apply(frame, t))
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video_frame.pts, video_frame.time_base = index, Fraction(1, spec.fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
            if progress is not None:
                progress(1)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(out)
    result = {"video": out.name, "seed": spec.seed, "width": spec.width, "height": spec.height, "fps": spec.fps,
              "frames": frames, "schedule": spec.schedule, "bitrate_kbps": bitrate_kbps,
              "noise_sigma": round(noise_sigma, 2), "occupancy": round(occupied / max(frames, 1), 3),
              "pillar": [pillar.x1, pillar.x2], "walkers": [truth[w.person] for w in walks]}
    out.with_suffix(".json").write_text(json.dumps(result))
    return result
