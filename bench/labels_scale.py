"""Benchmark: SDD-FIQA labels at face-recognition scale, from an embedding store, in bounded memory.

Synthetic identity-structured 128-d embeddings with an MS1M-like spread of images per
identity (MS1M-V2: 5.8M images of 85,742 identities; sizes log-normal around that mean,
heavy-tailed, clipped to 1..602, MS1M-V2's largest identity) are written into the embedding store format
(:mod:`trainer.store`: float16, memory-mapped) at each N. Then ``trainer labels --store``
runs in a child process: it maps the store, computes the labels with the reference
constants (12 repetitions, 24 positives, 24 negatives) and writes ``labels.csv``,
``summary.json`` and the histogram. Peak resident memory of that child, memory-mapped
store pages included, is ``ru_maxrss`` of the finished child (``getrusage``).

Printed per N: wall seconds of the whole command, seconds of the label computation
alone, peak RSS, the store's size, and per-million figures (time linear in N, memory
not growing faster than the store). The last line: ``n=<largest N> seconds=… peak_rss_mib=…``.

    python bench/labels_scale.py [--n 1000000,5800000] [--work DIR] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time

import numpy as np

from trainer.store import EMBEDDED, EmbeddingStore, StoreMeta

MS1M_IMAGES, MS1M_IDENTITIES = 5_800_000, 85_742
DIM = 128
MAX_SIZE = 602  # images of MS1M-V2's largest identity
SIGMA = 0.8  # log-normal spread of identity sizes: median ≈ 0.73 × mean, a long tail of large identities


def identity_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Images per identity summing to ``n``, MS1M's mean size, heavy-tailed."""
    k = max(2, round(n * MS1M_IDENTITIES / MS1M_IMAGES))
    mean = n / k
    sizes = np.clip(np.round(rng.lognormal(np.log(mean) - SIGMA**2 / 2, SIGMA, k)), 1, MAX_SIZE).astype(np.int64)
    while sizes.sum() != n:  # nudge random identities until the total is exact
        gap = n - int(sizes.sum())
        pick = rng.integers(0, k, min(abs(gap), k))
        sizes[pick] = np.clip(sizes[pick] + np.sign(gap), 1, MAX_SIZE)
    return sizes


def write_store(folder: Path, n: int, seed: int = 0, chunk: int = 1 << 18) -> EmbeddingStore:
    """A complete float16 store of ``n`` synthetic embeddings (rows grouped by identity, as datasets are)."""
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n, rng)
    identity = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    meta = StoreMeta(n=n, dim=DIM, dtype="float16", shard_size=4096, recognizer="synthetic",
                     fingerprint=f"synthetic-{n}-{seed}")
    store = EmbeddingStore.create(folder, meta, identity, [f"id{k}" for k in range(len(sizes))])
    centres = rng.standard_normal((len(sizes), DIM), dtype=np.float32)
    for start in range(0, n, chunk):
        ids = identity[start : start + chunk]
        rows = centres[ids] * 0.6 + rng.standard_normal((len(ids), DIM), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        store.embeddings[start : start + chunk] = rows.astype(np.float16)
    store.status[:] = EMBEDDED
    for shard in range(meta.shards):
        store.mark_done(shard, meta.fingerprint, [])
    store.close()
    return EmbeddingStore(folder)


def run_labels(store: Path, out: Path) -> tuple[float, float, float]:
    """(wall seconds, label seconds, peak RSS MiB) of ``trainer labels --store`` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--store", str(store), "--out", str(out),
                    "--quiet"], check=True, cwd=Path(__file__).resolve().parents[1],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("this child's peak RSS is hidden by an earlier, larger child: run sizes in ascending order")
    summary = json.loads((out / "summary.json").read_text())
    return wall, float(summary["seconds"]), peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="1000000,5800000", help="sizes, ascending")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and outputs")
    args = parser.parse_args()
    sizes = sorted(int(x) for x in args.n.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="labels_scale_"))
    print(f"{'N':>9} {'ids':>7} {'max size':>8} {'store MiB':>9} {'wall s':>7} {'labels s':>8} "
          f"{'s per 1M':>8} {'peak MiB':>8} {'peak/store':>10}", flush=True)
    last = None
    try:
        for n in sizes:
            store = write_store(work / f"store-{n}", n)
            ids = np.bincount(np.asarray(store.identity))
            store_mib = sum(p.stat().st_size for p in (work / f"store-{n}").glob("*.npy")) / 2**20
            store.close()
            wall, labels_s, peak = run_labels(work / f"store-{n}", work / f"labels-{n}")
            print(f"{n:>9} {len(ids):>7} {ids.max():>8} {store_mib:>9.0f} {wall:>7.1f} {labels_s:>8.1f} "
                  f"{wall / n * 1e6:>8.1f} {peak:>8.0f} {peak / store_mib:>10.2f}", flush=True)
            if not args.keep:
                shutil.rmtree(work / f"store-{n}")
                shutil.rmtree(work / f"labels-{n}")
            last = (n, wall, peak)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    n, wall, peak = last
    print(f"n={n} seconds={wall:.1f} peak_rss_mib={peak:.0f}")


if __name__ == "__main__":
    main()
