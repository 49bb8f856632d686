"""Detection only where something moves: a cheap motion test in front of the face detector.

Most camera frames show nobody, yet the detector is the gate's largest cost after
decoding. As NVR software does, each frame the detector would look at is first compared
with a running background on a small grayscale copy (the decoded luma plane, viewed in
place and resized by OpenCV: no colour conversion, :meth:`gate.source.Frame.gray_at`):

- blurred a little and compared pixel by pixel with the background, so sensor noise
  (already averaged away by the downscale) does not count;
- the background is first scaled by the ratio of the two images' mean brightness, so a
  slow or global lighting change does not count either; it also follows the scene at
  ``alpha`` per analysed frame (someone who stops walking fades into it);
- a pixel changed when it differs by more than ``threshold`` grey levels; small specks
  are removed by a morphological opening; there is motion when at least ``min_area`` of
  the image changed. A change over most of the image (lights switched, camera moved)
  resets the background and counts as motion once.

:class:`MotionGate` decides per frame: detect when there is motion, while any track is
alive (a person who stands still keeps being followed), and at least every
``idle_detect_s`` regardless (a person who was already standing there when the
background was learnt).
"""

from __future__ import annotations

import cv2
import numpy as np

from gate.config import MotionConfig

GLOBAL_CHANGE = 0.5  # this fraction of the image changed at once: not motion of a person; relearn the background
_OPEN_KERNEL = np.ones((3, 3), np.uint8)


class MotionDetector:
    """Frame difference against a running, brightness-compensated background."""

    def __init__(self, threshold: float, min_area: float, alpha: float) -> None:
        self.threshold, self.min_area, self.alpha = threshold, min_area, alpha
        self.background: np.ndarray | None = None
        self.changed_fraction = 0.0  # of the last image, for metrics and tests

    def update(self, gray: np.ndarray) -> bool:
        """Whether ``gray`` (uint8) shows motion against the background; learns it into the background."""
        current = cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)
        if self.background is None or self.background.shape != current.shape:
            self.background = current
            self.changed_fraction = 1.0
            return True
        ratio = float(current.mean()) / max(float(self.background.mean()), 1.0)
        self.background *= ratio
        changed = (cv2.absdiff(current, self.background) > self.threshold).astype(np.uint8)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, _OPEN_KERNEL)
        self.changed_fraction = cv2.countNonZero(changed) / changed.size
        if self.changed_fraction > GLOBAL_CHANGE:
            self.background = current
            return True
        cv2.accumulateWeighted(current, self.background, self.alpha)
        return self.changed_fraction >= self.min_area


class MotionGate:
    """Per camera: whether the detector should look at this frame."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self.detector = MotionDetector(config.threshold, config.min_area, config.alpha)
        self.last_detection_ts = float("-inf")

    def should_detect(self, gray: np.ndarray, ts: float, tracks_alive: bool) -> bool:
        """Decide for the frame at ``ts`` (seconds); a True answer means the caller detects it."""
        moving = self.detector.update(gray)
        if moving or tracks_alive or ts - self.last_detection_ts >= self.config.idle_detect_s:
            self.last_detection_ts = ts
            return True
        return False
