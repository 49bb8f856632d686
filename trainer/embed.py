"""Recognition embeddings of a dataset, written into an embedding store (:mod:`trainer.store`).

Items are embedded shard by shard; a re-run embeds only the shards that are not marked
done, so a killed run resumes where it stopped. Several worker processes share the work
on a CPU (each with its own ONNX Runtime session on one thread); under ``torchrun``,
rank ``r`` of ``w`` takes shards ``r, r + w, …`` and embeds on its own GPU (SFace's
MobileFaceNet in torch) when there is one. When the dataset changed since the last
complete store, that store is kept as ``<store>.previous`` while the new one is made, and
every image whose bytes (sha256) it already holds is copied from it instead of being
embedded again. 112×112 images are taken as aligned crops; others are detected (largest
face) and aligned. Unreadable images and images without a face are recorded with their
reason, never fatal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.embedder import DEFAULT_RECOGNIZER
from engines.errors import DatasetError
from engines.paths import cache_root
from trainer.datasets import FaceDataset
from trainer.distributed import rank_world, resolve_device, wait_for_all
from trainer.embed_shards import Reuse, ShardWorker, make_embedder, run_shards
from trainer.store import EmbeddingStore, StoreMeta


def default_shard_size(n: int) -> int:
    """Rows per shard: 4096 at scale, smaller for small sets so workers share them (depends on n only)."""
    return int(min(4096, max(64, -(-n // 64))))


def shard_fingerprints(dataset: FaceDataset, shard_size: int, salt: str) -> list[str]:
    """Per shard, a hash of its items' keys and stamps (no image is read)."""
    prints = []
    for start in range(0, len(dataset), shard_size):
        digest = hashlib.sha256(salt.encode())
        for i in range(start, min(len(dataset), start + shard_size)):
            digest.update(f"{dataset.key(i)}\0{dataset.stamp(i)}\n".encode())
        prints.append(digest.hexdigest()[:32])
    return prints


def default_store_dir(dataset: FaceDataset, recognizer: str, dtype: str, cache: Path | None = None) -> Path:
    """``<cache>/embeddings/<recogniser>-<dtype>/<hash of the roots>`` (cache: ``$FACEGATE_CACHE``)."""
    key = hashlib.sha256(repr(dataset.spec()).encode()).hexdigest()[:16]
    return (cache or cache_root()) / "embeddings" / f"{recognizer}-{dtype}" / key


# -- the whole dataset ---------------------------------------------------------------------


def _prepare(folder: Path, meta: StoreMeta, dataset: FaceDataset) -> tuple[EmbeddingStore, Path | None]:
    """Open the store to resume it, or create it (keeping a complete older one to reuse from)."""
    previous = folder.with_name(folder.name + ".previous")
    try:
        existing = EmbeddingStore(folder, "r")
    except Exception:  # absent, or killed while being created
        existing = None
    if existing is not None and existing.meta == meta:
        existing.close()
        return EmbeddingStore(folder, "r+"), previous if previous.is_dir() else None
    if existing is not None:
        complete = existing.done_shards() == existing.meta.shards and existing.meta.dim == meta.dim
        existing.close()
        if complete:
            shutil.rmtree(previous, ignore_errors=True)
            folder.rename(previous)
    store = EmbeddingStore.create(folder, meta, dataset.identity_index, dataset.identity_names)
    return store, previous if previous.is_dir() else None


@dataclass
class EmbedRun:
    """What :func:`embed_to_store` did."""

    store_dir: Path
    embedded: int = 0
    reused: int = 0
    failed: int = 0
    shards_done_before: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def embed_to_store(dataset: FaceDataset, store_dir: Path | None = None, recognizer: str = DEFAULT_RECOGNIZER,
                   dtype: str = "float16", shard_size: int | None = None, workers: int | None = None,
                   device: str = "auto", progress: bool = True, cache: Path | None = None) -> EmbedRun:
    """Embed every item of ``dataset`` into a store (resuming one that was interrupted).

    ``workers``: CPU processes (default: the CPU count; 1 embeds in this process).
    Under ``torchrun`` each rank embeds its shards (on its GPU when there is one) and
    rank 0 returns once every shard is done.
    """
    from tqdm import tqdm

    from engines.modelfiles import load_model

    rank, world, local_rank = rank_world()
    manifest, _ = load_model(recognizer)
    folder = (Path(store_dir) if store_dir
              else default_store_dir(dataset, manifest.tag.replace("@", "-"), dtype, cache))
    shard_size = shard_size or default_shard_size(len(dataset))
    prints = shard_fingerprints(dataset, shard_size, f"{manifest.tag}/{dtype}")
    meta = StoreMeta(n=len(dataset), dim=int(manifest.embedding_dim or 0), dtype=dtype, shard_size=shard_size,
                     recognizer=manifest.tag, fingerprint=hashlib.sha256("".join(prints).encode()).hexdigest()[:32],
                     data=dataset.spec())
    if rank == 0:
        folder.parent.mkdir(parents=True, exist_ok=True)
        store, reuse_dir = _prepare(folder, meta, dataset)
    wait_for_all(world)
    if rank != 0:
        store = EmbeddingStore(folder, "r+")
        previous = folder.with_name(folder.name + ".previous")
        reuse_dir = previous if previous.is_dir() else None
    run = EmbedRun(folder)
    done = [s for s in range(meta.shards) if store.shard_done(s, prints[s])]
    run.shards_done_before = len(done)
    done_set = set(done)
    tasks = [(s, prints[s]) for s in range(rank, meta.shards, world) if s not in done_set]
    rows = sum(store.shard_rows(s)[1] - store.shard_rows(s)[0] for s, _ in tasks)
    if done and progress and rank == 0:
        print(f"embeddings: {len(done)} of {meta.shards} shards already done in {folder}", flush=True)
    device = resolve_device(device, local_rank)  # names other than cuda… (cpu, labels' numpy) embed on the CPU
    if device.startswith("cuda") or (world > 1 and workers is None):
        workers = 1  # one process per GPU, or per torchrun rank unless asked otherwise
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    started = time.perf_counter()
    with tqdm(total=rows, desc="embeddings" + (f" (rank {rank})" if world > 1 else ""), unit="img",
              disable=not progress, smoothing=0.1) as bar:
        if workers == 1:
            reuse = Reuse(reuse_dir) if reuse_dir else None
            worker = ShardWorker(dataset, store, make_embedder(recognizer, device, None if world == 1 else 1), reuse,
                             bar.update, info={"rank": rank, "device": device})
            results = [worker.shard(*task) for task in tasks]
        else:
            results = run_shards((dataset, str(folder), str(reuse_dir) if reuse_dir else None, recognizer),
                                  tasks, workers, bar)
    run.seconds = time.perf_counter() - started
    run.embedded, run.reused, run.failed = (sum(r[i] for r in results) for i in range(3))
    wait_for_all(world)
    if rank == 0:
        missing = [s for s in range(meta.shards) if not store.shard_done(s, prints[s])]
        if missing:
            raise DatasetError(f"embedding store {folder}: shards {missing[:5]} are not done after every rank ended")
        previous = folder.with_name(folder.name + ".previous")
        if previous.is_dir():
            shutil.rmtree(previous, ignore_errors=True)
    store.close()
    return run


@dataclass
class EmbeddedDataset:
    """Embeddings of the usable images in memory (small sets), with their keys, paths, identities."""

    embeddings: np.ndarray
    keys: list[str]
    paths: list[str]
    identities: list[str]
    rows: np.ndarray  # positions in the dataset
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model: str = ""
    reused: int = 0  # images taken from a previous store (same bytes) or an earlier run
    store_dir: Path | None = None


def embed_dataset(dataset: FaceDataset, store_dir: Path | None = None, workers: int | None = 1,
                  progress: bool = True, **options) -> EmbeddedDataset:
    """Embed ``dataset`` through a store and load the usable rows into memory."""
    run = embed_to_store(dataset, store_dir, workers=workers, progress=progress, **options)
    store = EmbeddingStore(run.store_dir, "r")
    rows = np.nonzero(store.usable)[0]
    skipped = list(dataset.skipped) + [(dataset.path(r), reason) for r, reason in store.failures()]
    result = EmbeddedDataset(
        embeddings=np.asarray(store.embeddings[rows], np.float32), keys=[dataset.key(i) for i in rows],
        paths=[dataset.path(i) for i in rows], identities=[dataset.identity(i) for i in rows], rows=rows,
        skipped=skipped, model=store.meta.recognizer, reused=len(dataset) - run.embedded - run.failed,
        store_dir=run.store_dir)
    store.close()
    return result
