"""A slow recogniser on every core: worker processes, each with its own model.

dlib's ResNet embeds one face at a time on one thread (about 150 ms a face here), which made
it the longest part of a first evaluation of a new held-out set (``trainer rebuild``'s step
5 embeds ``pins/heldout``, its degraded copy and the seed set: about 7,200 crops). Worker
processes are spawned (not forked: the parent may hold ONNX Runtime or torch thread pools),
each loads the recogniser once, and a batch is split evenly over them, so the results come
back in order and are the same as one process's.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

_WORKER_MODEL = None


def default_workers() -> int:
    """Processes to use: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start(name: str) -> None:
    global _WORKER_MODEL
    from trainer.recognizers import recognizer

    _WORKER_MODEL = recognizer(name)


def _embed(crops: np.ndarray) -> np.ndarray:
    return _WORKER_MODEL.embed(crops)


class RecognizerPool:
    """``embed(crops)`` over ``workers`` processes (started on first use); close it, or use ``with``."""

    def __init__(self, name: str, workers: int) -> None:
        self.name, self.workers = name, max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=(self.name,))
        parts = [part for part in np.array_split(crops, self.workers) if len(part)]
        return np.concatenate(list(self._pool.map(_embed, parts)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> RecognizerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
