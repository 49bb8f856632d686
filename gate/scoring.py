"""One batched quality scorer for all cameras, behind a bounded queue.

Camera threads submit aligned crops; one thread scores them in batches (TensorRT or ONNX
Runtime) and hands each result back to its camera's best-shot state. Under overload the
oldest crops are dropped and counted; the queue never grows without bound. Track-end
markers travel through the same queue (never dropped), so an ``end`` is published only
after every earlier score of its track.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gate.bestshot import BestShot, Sample

log = logging.getLogger(__name__)


@dataclass
class ScoreJob:
    shot: BestShot  # the camera's best-shot state the result goes to
    sample: Sample


@dataclass
class EndJob:
    shot: BestShot
    track_id: int
    end_ts: float


class ScoringQueue:
    """Bounded FIFO of score jobs and end markers, drained by one scorer thread."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], capacity: int = 256, batch_size: int = 32,
                 observers: list[Callable[[ScoreJob, float], None]] | None = None) -> None:
        self._score = score
        # Each sees every scored crop with its quality: the gate's latency metric; benchmarks record the
        # candidates the gate chose from. None registered: no cost.
        self.observers = list(observers or [])
        self.capacity, self.batch_size = capacity, batch_size
        self._items: deque[ScoreJob | EndJob] = deque()
        self._jobs = 0
        self._cond = threading.Condition()
        self._stop = False
        self.dropped = 0
        self.scored = 0
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
        self._thread.start()

    def submit(self, job: ScoreJob, wait: bool = False) -> None:
        """Queue a crop; when full, drop the oldest crop (a live camera must not stall), or with ``wait``
        block until there is room (a file read faster than real time: backpressure, nothing lost)."""
        with self._cond:
            while wait and self._jobs >= self.capacity and not self._stop:
                self._cond.wait(0.5)
            if self._jobs >= self.capacity:
                for i, item in enumerate(self._items):  # drop the oldest score job
                    if isinstance(item, ScoreJob):
                        del self._items[i]
                        self._jobs -= 1
                        self.dropped += 1
                        break
            self._items.append(job)
            self._jobs += 1
            self._cond.notify()

    def end_track(self, job: EndJob) -> None:
        with self._cond:
            self._items.append(job)
            self._cond.notify()

    def depth(self) -> int:
        with self._cond:
            return self._jobs

    def _take(self) -> list[ScoreJob | EndJob] | None:
        with self._cond:
            while not self._items and not self._stop:
                self._cond.wait(0.5)
            if not self._items:
                return None
            taken: list[ScoreJob | EndJob] = []
            while self._items and len(taken) < self.batch_size:
                item = self._items.popleft()
                taken.append(item)
                if isinstance(item, ScoreJob):
                    self._jobs -= 1
                else:
                    break  # an end marker closes the batch: its track's scores come first
            self._cond.notify_all()  # room for submitters waiting on a full queue
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            jobs = [t for t in taken if isinstance(t, ScoreJob)]
            if jobs:
                try:
                    scores = self._score(np.stack([j.sample.crop for j in jobs]))
                except Exception:  # a scorer fault must not kill the gate
                    log.exception("quality scoring failed for a batch of %d", len(jobs))
                    scores = None
                if scores is not None:
                    self.scored += len(jobs)
                    for job, value in zip(jobs, scores, strict=True):
                        job.shot.on_scored(job.sample, float(value))
                        for observer in self.observers:
                            try:
                                observer(job, float(value))
                            except Exception:
                                log.exception("scoring observer failed")
            for item in taken:
                if isinstance(item, EndJob):
                    item.shot.on_end(item.track_id, item.end_ts)

    def close(self) -> None:
        """Score what is queued, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(30)
