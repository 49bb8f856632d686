"""Typed errors of the inference layer.

Callers (the gate, the trainer CLI) catch these to print one clear line instead of a
traceback from deep inside onnxruntime or OpenCV.
"""

from __future__ import annotations


class FacegateError(Exception):
    """Base of every error facegate raises on purpose."""


class ModelError(FacegateError):
    """A model file or manifest is missing, unreadable or malformed."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 does not match its manifest."""


class ImageReadError(FacegateError):
    """An image file cannot be read or decoded."""


class NoFaceError(FacegateError):
    """An image that should hold a face holds none."""


class DatasetError(FacegateError):
    """An identity-folder dataset is empty or unusable."""
