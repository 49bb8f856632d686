"""Face detector: YuNet (box, score, 5 landmarks) run through a backend.

Frames are resized so the longer side is at most ``max_side`` (detection cost grows with
pixels, faces in camera frames are rarely tiny), padded to the model's stride, decoded
from YuNet's anchor-free outputs and mapped back to source pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engines.backends import Backend
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.detections import Faces
from engines.manifest import Manifest
from engines.modelfiles import load_model
from engines.preprocess import to_blob

DEFAULT_DETECTOR = "yunet-2023mar"
STRIDES = (8, 16, 32)


class Detector:
    """Detect faces in BGR frames, one at a time or in batches of same-size frames."""

    def __init__(
        self,
        model: str = DEFAULT_DETECTOR,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 100,
        max_side: int | None = 640,
        backend: Backend | None = None,
        cache: Path | None = None,
        threads: int | None = None,
    ) -> None:
        manifest, onnx_path = load_model(model, cache)
        self.manifest: Manifest = manifest
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.max_side = max_side
        self._backend = backend or OnnxRuntimeBackend(onnx_path, threads=threads)

    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Resize (down only) and zero-pad to the stride; return image and scale back."""
        h, w = frame.shape[:2]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = max(h, w) / self.max_side
            frame = cv2.resize(frame, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
        return frame, scale

    def _pad(self, frame: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
        h, w = frame.shape[:2]
        if (h, w) == (pad_h, pad_w):
            return frame
        return cv2.copyMakeBorder(frame, 0, pad_h - h, 0, pad_w - w, cv2.BORDER_CONSTANT, value=0)

    def detect(self, frame: np.ndarray) -> Faces:
        """Faces of one BGR frame."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Faces]:
        """Faces of several BGR frames; frames of equal size run as one batch."""
        prepared = [self._prepare(f) for f in frames]
        multiple = self.manifest.input.pad_multiple
        results: list[Faces | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (image, _) in enumerate(prepared):
            h, w = image.shape[:2]
            key = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
            groups.setdefault(key, []).append(index)
        for (pad_h, pad_w), indices in groups.items():
            batch = np.stack([self._pad(prepared[i][0], pad_h, pad_w) for i in indices])
            outputs = self._backend.run({self.manifest.input.name: to_blob(batch, self.manifest.input)})
            for row, index in enumerate(indices):
                faces = self._decode(outputs, row, pad_h, pad_w)
                results[index] = faces.scaled(prepared[index][1])
        return results  # type: ignore[return-value]

    def _decode(self, outputs: dict[str, np.ndarray], row: int, pad_h: int, pad_w: int) -> Faces:
        boxes, scores, points = [], [], []
        for stride in STRIDES:
            rows, cols = pad_h // stride, pad_w // stride
            cls = np.clip(outputs[f"cls_{stride}"][row, :, 0], 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"][row, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            grid_c = (keep % cols).astype(np.float32)
            grid_r = (keep // cols).astype(np.float32)
            assert rows * cols == cls.shape[0]
            reg = outputs[f"bbox_{stride}"][row, keep]
            cx, cy = (grid_c + reg[:, 0]) * stride, (grid_r + reg[:, 1]) * stride
            w, h = np.exp(reg[:, 2]) * stride, np.exp(reg[:, 3]) * stride
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
            kps = outputs[f"kps_{stride}"][row, keep].reshape(-1, 5, 2)
            grid = np.stack([grid_c, grid_r], axis=1)[:, None, :]
            points.append((kps + grid) * stride)
            scores.append(score[keep])
        if not scores:
            return Faces.empty()
        all_boxes = np.concatenate(boxes).astype(np.float32)
        all_scores = np.concatenate(scores).astype(np.float32)
        all_points = np.concatenate(points).astype(np.float32)
        xywh = np.concatenate([all_boxes[:, :2], all_boxes[:, 2:] - all_boxes[:, :2]], axis=1)
        kept = cv2.dnn.NMSBoxes(
            xywh.tolist(), all_scores.tolist(), self.score_threshold, self.nms_threshold, top_k=self.top_k
        )
        kept = np.asarray(kept, dtype=np.int64).reshape(-1)
        order = kept[np.argsort(-all_scores[kept])]
        return Faces(all_boxes[order], all_scores[order], all_points[order])

    def close(self) -> None:
        self._backend.close()
