"""Draw walkers into a frame: a body, then the face composited from aligned photos, degraded.

A face photo is an ArcFace-aligned 112×112 crop, so a similarity transform that puts the
crop into the frame also says where the five template landmarks land: the ground-truth
landmarks and face box of every frame come from the same matrix that drew the face.
The face is cut out with a soft ellipse (so the photo's own background never shows),
then blurred as a layer (premultiplied by its mask: the edges smear as a moving or
out-of-focus face's would), composited, recompressed and partly covered.
"""

from __future__ import annotations

import cv2
import numpy as np

from bench.walkby.walker import FaceState
from engines.alignment import ARCFACE_TEMPLATE, CROP_SIZE

# YuNet's face box on ArcFace-aligned crops (median over 200 held-out Pins crops, in crop pixels):
# the ground-truth box is this box carried into the frame, so it is comparable with the gate's boxes.
FACE_BOX_IN_CROP = (17.5, 11.2, 96.4, 114.3)
FACE_BOX_CENTRE = ((FACE_BOX_IN_CROP[0] + FACE_BOX_IN_CROP[2]) / 2, (FACE_BOX_IN_CROP[1] + FACE_BOX_IN_CROP[3]) / 2)
FACE_BOX_WIDTH = FACE_BOX_IN_CROP[2] - FACE_BOX_IN_CROP[0]


def face_mask() -> np.ndarray:
    """Soft ellipse over the face and hair line of an aligned crop, 0..1 float32."""
    mask = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    cv2.ellipse(mask, (56, 60), (44, 54), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), 3.0)


def crop_to_frame(state: FaceState) -> np.ndarray:
    """2×3 similarity matrix taking crop pixels into the frame for this face state."""
    scale = state.size_px / FACE_BOX_WIDTH
    angle = np.deg2rad(state.roll_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.zeros((2, 3))
    matrix[:, :2] = rotation
    matrix[:, 2] = np.array([state.cx, state.cy]) - rotation @ np.array(FACE_BOX_CENTRE)
    return matrix


def transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def truth_box(matrix: np.ndarray) -> np.ndarray:
    """The face box in frame pixels (axis-aligned hull of the carried crop box)."""
    x1, y1, x2, y2 = FACE_BOX_IN_CROP
    corners = transform(matrix, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]))
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def truth_landmarks(matrix: np.ndarray) -> np.ndarray:
    return transform(matrix, ARCFACE_TEMPLATE)


def _line_kernel(dx: float, dy: float) -> np.ndarray | None:
    length = float(np.hypot(dx, dy))
    if length < 1.0:
        return None
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    centre = size // 2
    cv2.line(kernel, (round(centre - dx / 2), round(centre - dy / 2)), (round(centre + dx / 2), round(centre + dy / 2)),
             1.0, 1, cv2.LINE_AA)
    return kernel / kernel.sum()


class Appearance:
    """A walker's photos (aligned BGR crops) and the colours of the body drawn below the face."""

    def __init__(self, rng: np.random.Generator, photos: list[np.ndarray]) -> None:
        self.photos = [p.astype(np.float32) for p in photos]
        first = photos[0]
        self.skin = tuple(float(c) for c in first[62:82, 42:70].reshape(-1, 3).mean(axis=0))
        self.hair = tuple(float(c) * 0.6 for c in first[0:8, 40:72].reshape(-1, 3).mean(axis=0))
        self.clothes = tuple(float(c) for c in rng.uniform(20, 220, 3))
        self.occluder = self.skin if rng.random() < 0.6 else (30.0, 30.0, 35.0)  # a hand, or a phone / cup


def draw_body(frame: np.ndarray, state: FaceState, look: Appearance) -> None:
    """Shoulders, neck and the back of the head: what moves with a person besides the face."""
    w = state.size_px
    cx, cy = round(state.cx), round(state.cy)
    height = frame.shape[0]
    cv2.rectangle(frame, (round(cx - 1.05 * w), round(cy + 1.5 * w)), (round(cx + 1.05 * w), height + 10),
                  look.clothes, -1)
    cv2.ellipse(frame, (cx, round(cy + 1.6 * w)), (round(1.1 * w), round(0.55 * w)), 0, 180, 360, look.clothes, -1,
                cv2.LINE_AA)
    cv2.rectangle(frame, (round(cx - 0.25 * w), cy), (round(cx + 0.25 * w), round(cy + 1.2 * w)), look.skin, -1)
    cv2.ellipse(frame, (cx, round(cy - 0.12 * w)), (round(0.62 * w), round(0.74 * w)), state.roll_deg, 0, 360,
                look.hair, -1, cv2.LINE_AA)


def body_boxes(state: FaceState, frame_height: int) -> list[tuple[float, float, float, float]]:
    """Boxes around what :func:`draw_body` and the face cover (for the truth's ``covered`` fraction)."""
    w, cx, cy = state.size_px, state.cx, state.cy
    return [(cx - 0.65 * w, cy - 0.9 * w, cx + 0.65 * w, cy + 0.7 * w),
            (cx - 1.1 * w, cy + 1.05 * w, cx + 1.1 * w, frame_height)]


def covered_fraction(box: np.ndarray, covers: list[tuple[float, float, float, float]]) -> float:
    """Fraction of ``box`` hidden under the union of ``covers`` (rasterised at one-pixel resolution)."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    if x2 <= x1 or y2 <= y1 or not covers:
        return 0.0
    hidden = np.zeros((y2 - y1, x2 - x1), bool)
    for cx1, cy1, cx2, cy2 in covers:
        a, b = max(int(cx1) - x1, 0), min(int(cx2) - x1, x2 - x1)
        c, d = max(int(cy1) - y1, 0), min(int(cy2) - y1, y2 - y1)
        if a < b and c < d:
            hidden[c:d, a:b] = True
    return float(hidden.mean())


def draw_face(frame: np.ndarray, state: FaceState, look: Appearance, mask: np.ndarray) -> np.ndarray:
    """Composite the degraded face into ``frame`` (in place); returns the crop→frame matrix."""
    matrix = crop_to_frame(state)
    current, previous = state.photos
    crop = look.photos[current] * (1 - state.mix) + look.photos[previous] * state.mix
    crop = np.clip(crop * state.gain, 0, 255)
    blur_margin = int(abs(state.motion_px[0]) + abs(state.motion_px[1]) + 3 * state.defocus_px) + 2
    corners = transform(matrix, np.array([[0, 0], [CROP_SIZE, 0], [CROP_SIZE, CROP_SIZE], [0, CROP_SIZE]]))
    height, width = frame.shape[:2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - blur_margin
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + blur_margin
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return matrix
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    alpha = cv2.warpAffine(mask, local, size, flags=cv2.INTER_LINEAR, borderValue=0)
    layer = cv2.warpAffine(crop, local, size, flags=cv2.INTER_LINEAR, borderValue=0) * alpha[..., None]
    if state.defocus_px > 0.3:
        layer = cv2.GaussianBlur(layer, (0, 0), state.defocus_px)
        alpha = cv2.GaussianBlur(alpha, (0, 0), state.defocus_px)
    kernel = _line_kernel(*state.motion_px)
    if kernel is not None:
        layer = cv2.filter2D(layer, -1, kernel)
        alpha = cv2.filter2D(alpha, -1, kernel)
    region = frame[y0:y1, x0:x1].astype(np.float32)
    region = region * (1 - alpha[..., None]) + layer
    frame[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)
    if state.jpeg_quality < 95:
        ok, data = cv2.imencode(".jpg", frame[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, state.jpeg_quality])
        if ok:
            frame[y0:y1, x0:x1] = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if state.occlusion > 0.02:
        box = truth_box(matrix)
        w, h = box[2] - box[0], box[3] - box[1]
        centre_x = state.cx + state.occluder_side * (w / 2 - state.occlusion * w / 2)
        axes = (max(1, round(state.occlusion * w / 2 + 0.1 * w)), max(1, round(0.3 * h)))
        cv2.ellipse(frame, (round(centre_x), round(state.cy + 0.2 * h)), axes, 0, 0, 360, look.occluder, -1,
                    cv2.LINE_AA)
    return matrix
