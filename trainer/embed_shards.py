"""Embedding one shard of a dataset into the store, in this process or in worker processes.

A :class:`ShardWorker` reads each item of its shard, copies the embedding of an image
whose bytes a previous store already holds, embeds the others in batches, writes the
rows, and marks the shard done (:meth:`trainer.store.EmbeddingStore.mark_done`) only
after they are on disk. Worker processes are spawned, not forked (ONNX Runtime sessions
do not survive a fork); each builds its own session with one thread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.alignment import CROP_SIZE, align_face
from engines.embedder import DEFAULT_RECOGNIZER, Embedder
from engines.errors import ImageReadError
from trainer.datasets import FaceDataset, decode_image
from trainer.store import EMBEDDED, FAILED, PENDING, EmbeddingStore

NO_FACE = "no face found"
BATCH = 64


class Reuse:
    """Rows of a previous store found by the sha256 of their image bytes."""

    def __init__(self, folder: Path) -> None:
        self.store = EmbeddingStore(folder, "r")
        rows = np.nonzero(np.asarray(self.store.status) != PENDING)[0]
        heads = np.ascontiguousarray(self.store.digests[rows, :8]).view("<u8").ravel()
        order = np.argsort(heads, kind="stable")
        self.heads, self.rows = heads[order], rows[order]
        self.reasons = dict(self.store.failures())

    def find(self, digest: bytes) -> tuple[np.ndarray | None, str | None] | None:
        """(vector, None) or (None, reason) when the previous store had these bytes, else None."""
        head = np.frombuffer(digest[:8], "<u8")[0]
        at = int(np.searchsorted(self.heads, head))
        while at < len(self.heads) and self.heads[at] == head:
            row = int(self.rows[at])
            if bytes(self.store.digests[row]) == digest:
                if self.store.status[row] == EMBEDDED:
                    return np.asarray(self.store.embeddings[row]), None
                return None, self.reasons.get(row, NO_FACE)
            at += 1
        return None


class TorchSFace:
    """SFace's MobileFaceNet in torch on a device (a GPU rank's embedder), the Backend protocol."""

    def __init__(self, device: str) -> None:
        import torch

        from engines.modelfiles import load_model
        from trainer.mobilefacenet import SFaceEmbedding, load_sface_weights

        manifest, onnx_path = load_model(DEFAULT_RECOGNIZER)
        self.torch, self.device = torch, torch.device(device)
        self.net = SFaceEmbedding()
        load_sface_weights(self.net, onnx_path)
        self.net.eval().to(self.device)
        self.input_names, self.output_names = (manifest.input.name,), tuple(manifest.outputs[:1])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.no_grad():
            out = self.net(self.torch.from_numpy(inputs[self.input_names[0]]).to(self.device))
        return {self.output_names[0]: out.cpu().numpy()}

    def close(self) -> None:
        self.net = None


def make_embedder(recognizer: str, device: str, threads: int | None) -> Embedder:
    """ONNX Runtime on ``threads`` CPU threads, or SFace in torch on a CUDA device."""
    if device.startswith("cuda"):
        return Embedder(recognizer, batch_size=BATCH, backend=TorchSFace(device))
    from engines.backends.onnxruntime import OnnxRuntimeBackend
    from engines.modelfiles import load_model

    _, onnx_path = load_model(recognizer)
    return Embedder(recognizer, batch_size=BATCH, backend=OnnxRuntimeBackend(onnx_path, threads=threads))


@dataclass
class ShardWorker:
    """What one process needs to embed shards: the dataset, the open store, its embedder."""

    dataset: FaceDataset
    store: EmbeddingStore
    embedder: Embedder
    reuse: Reuse | None
    report: object  # callable(rows) for progress
    detector: object = None
    info: dict = field(default_factory=dict)

    def crop(self, image: np.ndarray) -> np.ndarray | None:
        if image.shape[:2] == (CROP_SIZE, CROP_SIZE):
            return image
        if self.detector is None:
            from engines.detector import Detector

            self.detector = Detector(max_side=1280)
        faces = self.detector.detect(image)
        if len(faces) == 0:
            return None
        return align_face(image, faces.landmarks_px[int(np.argmax(faces.sizes_px))])

    def shard(self, shard: int, fingerprint: str) -> tuple[int, int, int]:
        """Embed one shard's rows and mark it done; (embedded, reused, failed) counts."""
        store, dtype = self.store, self.store.embeddings.dtype
        start, end = store.shard_rows(shard)
        failures: list[tuple[int, str]] = []
        batch_rows: list[int] = []
        batch_crops: list[np.ndarray] = []
        counts = {"embedded": 0, "reused": 0, "failed": 0}

        def fail(row: int, reason: str, counted_as: str = "failed") -> None:
            failures.append((row, reason))
            store.status[row] = FAILED
            counts[counted_as] += 1
            self.report(1)

        def flush() -> None:
            if batch_rows:
                store.embeddings[batch_rows] = self.embedder.embed(np.stack(batch_crops)).astype(dtype)
                store.status[batch_rows] = EMBEDDED
                counts["embedded"] += len(batch_rows)
                self.report(len(batch_rows))
                batch_rows.clear()
                batch_crops.clear()

        for row in range(start, end):
            try:
                data = self.dataset.read_bytes(row)
            except ImageReadError as exc:
                fail(row, str(exc))
                continue
            digest = hashlib.sha256(data).digest()
            store.digests[row] = np.frombuffer(digest, np.uint8)
            found = self.reuse.find(digest) if self.reuse else None
            if found is not None:
                vector, reason = found
                if vector is None:
                    fail(row, reason, "reused")
                    continue
                store.embeddings[row] = vector
                store.status[row] = EMBEDDED
                counts["reused"] += 1
                self.report(1)
                continue
            try:
                crop = self.crop(decode_image(data, self.dataset.path(row)))
            except ImageReadError as exc:
                fail(row, str(exc))
                continue
            if crop is None:
                fail(row, NO_FACE)
                continue
            batch_rows.append(row)
            batch_crops.append(crop)
            if len(batch_rows) >= BATCH:
                flush()
        flush()
        store.mark_done(shard, fingerprint, failures, **counts, **self.info)
        return counts["embedded"], counts["reused"], counts["failed"]


# -- worker processes ----------------------------------------------------------------------

_PROCESS: dict = {}


def _die_with_parent() -> None:
    """Linux: end this worker when the process that started it dies (a killed run leaves no orphans)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_process(dataset: FaceDataset, store_dir: str, reuse_dir: str | None, recognizer: str, queue) -> None:
    _die_with_parent()
    reuse = Reuse(Path(reuse_dir)) if reuse_dir else None
    store = EmbeddingStore(Path(store_dir), "r+")
    _PROCESS["worker"] = ShardWorker(dataset, store, make_embedder(recognizer, "cpu", 1), reuse, queue.put,
                                     info={"worker": os.getpid()})


def _run_shard(task: tuple[int, str]) -> tuple[int, int, int]:
    return _PROCESS["worker"].shard(*task)


def run_shards(worker_args: tuple, tasks: list[tuple[int, str]], workers: int, bar) -> list[tuple[int, int, int]]:
    """Shards on ``workers`` processes (spawned: ONNX Runtime and fork do not mix).

    A worker that dies (killed, out of memory) ends the run with BrokenProcessPool
    instead of a hang; the shards it finished are marked and are not done again.
    """
    import multiprocessing as mp
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = mp.get_context("spawn")
    progress = context.Queue()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process,
                             initargs=(*worker_args, progress)) as pool:
        futures = [pool.submit(_run_shard, task) for task in tasks]
        while True:
            try:
                bar.update(progress.get(timeout=0.5))
                continue
            except queue_module.Empty:
                pass
            done, pending = wait(futures, timeout=0, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for future in pending:
                    future.cancel()
                raise failed[0].exception()
            if not pending:
                break
        while not progress.empty():
            bar.update(progress.get())
        return [future.result() for future in futures]
