"""One batched quality scorer for all cameras, behind a bounded queue.

Camera threads submit aligned crops; one thread scores them in batches (TensorRT or ONNX
Runtime) and hands each result back to its camera's best-shot state. Under overload the
oldest crops are dropped and counted; the queue never grows without bound. Track-end
markers travel through the same queue (never dropped), so an ``end`` is published only
after every earlier score of its track. A failing batch or a failing hand-over costs that
item only: the thread logs it and goes on. Work that arrives after :meth:`close` is an
error in the log, never a silent drop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class _Marker:
    """Set once every item queued before it was handled (see :meth:`ScoringQueue.barrier`)."""

    done: threading.Event = field(default_factory=threading.Event)


class ScoringQueue:
    """Bounded FIFO of score jobs and end markers, drained by one scorer thread."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], capacity: int = 256, batch_size: int = 32,
                 observers: list[Callable[[ScoreJob, float], None]] | None = None) -> None:
        self._score = score
        # Each sees every scored crop with its quality: the gate's latency metric; benchmarks record the
        # candidates the gate chose from. None registered: no cost.
        self.observers = list(observers or [])
        self.capacity, self.batch_size = capacity, batch_size
        self._items: deque[ScoreJob | EndJob | _Marker] = deque()
        self._jobs = 0
        self._cond = threading.Condition()
        self._stop = False
        self.dropped = 0
        self.scored = 0
        self.late = 0  # items that arrived after close (logged as errors)
        self.callback_errors = 0  # results or ends that could not be handed on (logged)
        self.failure: str | None = None  # why the scorer thread died, if it did
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
        self._thread.start()

    def _refuse_late(self, job: ScoreJob | EndJob) -> bool:
        if not self._stop:
            return False
        self.late += 1
        what = "track end" if isinstance(job, EndJob) else "crop"
        camera = getattr(job.shot, "camera", "?")
        log.error("%s of camera %s submitted after close of the scorer: dropped", what, camera)
        return True

    def submit(self, job: ScoreJob, wait: bool = False) -> None:
        """Queue a crop; when full, drop the oldest crop (a live camera must not stall), or with ``wait``
        block until there is room (a file read faster than real time: backpressure, nothing lost)."""
        with self._cond:
            if self._refuse_late(job):
                return
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
            if self._refuse_late(job):
                return
            self._items.append(job)
            self._cond.notify()

    def barrier(self, timeout_s: float) -> bool:
        """Wait until everything submitted so far was handled (True), or the timeout passed."""
        marker = _Marker()
        with self._cond:
            if not self._thread.is_alive():
                return not self._items
            self._items.append(marker)
            self._cond.notify()
        return marker.done.wait(timeout_s)

    def depth(self) -> int:
        with self._cond:
            return self._jobs

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _take(self) -> list[ScoreJob | EndJob | _Marker] | None:
        with self._cond:
            while not self._items and not self._stop:
                self._cond.wait(0.5)
            if not self._items:
                return None
            taken: list[ScoreJob | EndJob | _Marker] = []
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
        try:
            while (taken := self._take()) is not None:
                self._handle(taken)
        except BaseException as exc:  # never quietly: health reports it, the gate exits non-zero
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the scoring thread failed")
            raise

    def _handle(self, taken: list[ScoreJob | EndJob | _Marker]) -> None:
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
                    self._hand_on(job.shot.on_scored, job.sample, float(value))
                    for observer in self.observers:
                        self._hand_on(observer, job, float(value))
        for item in taken:
            if isinstance(item, EndJob):
                self._hand_on(item.shot.on_end, item.track_id, item.end_ts)
            elif isinstance(item, _Marker):
                item.done.set()

    def _hand_on(self, callback: Callable, *args) -> None:
        try:
            callback(*args)
        except Exception as exc:  # e.g. OSError from a full disk: this item is lost, the thread goes on
            self.callback_errors += 1
            log.exception("handing a scoring result on failed (%s: %s); continuing", type(exc).__name__, exc)

    def close(self, timeout_s: float = 30.0) -> None:
        """Score what is queued, then stop; later submissions are logged as errors."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
