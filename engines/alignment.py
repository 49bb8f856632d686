"""Alignment of 5 landmarks to the 112×112 ArcFace template.

A least-squares similarity transform (Umeyama 1991: rotation, uniform scale,
translation) maps the detected points onto the template; the crop is warped with it.
Recognition and quality models both expect crops made this way.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 112
# The ArcFace/InsightFace template for 112×112 crops (right eye, left eye, nose,
# right mouth corner, left mouth corner; x to the right, y down).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 similarity matrix M minimising Σ‖M·src_i − dst_i‖² (Umeyama's closed form)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_matrix(landmarks_px: np.ndarray) -> np.ndarray:
    """Similarity matrix taking a face's 5 landmarks onto the ArcFace template."""
    return similarity_fit(landmarks_px, ARCFACE_TEMPLATE)


def align_face(image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    """The 112×112 aligned crop of one face (same colour order as ``image``)."""
    matrix = align_matrix(landmarks_px)
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)


def align_faces(image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    """N×112×112×3 aligned crops for N faces of one image."""
    crops = [align_face(image, points) for points in np.asarray(landmarks_px)]
    if not crops:
        return np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    return np.stack(crops)
