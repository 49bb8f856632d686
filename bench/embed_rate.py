"""Benchmark: embedding throughput into the store, against the embedder alone on the same crops.

The seed set's aligned training crops, copied under new names until there are ``--n``
images (each is embedded: a fresh store has nothing to reuse), are embedded three ways
in one run: the bare embedder on decoded crops in memory (the ceiling: no reading,
decoding or writing), ``trainer embed``'s path in this process (ONNX Runtime on every
core), and with ``--workers`` processes of one thread each. Prints images/s for each;
last line ``images_per_s=<workers path> ratio_to_bare=<workers path / bare embedder>``.

    python bench/embed_rate.py [--n 1536] [--workers 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import argparse
import os
import shutil
import tempfile
import time

import cv2
import numpy as np

from trainer.datasets import open_datasets
from trainer.embed import embed_to_store
from trainer.embed_shards import make_embedder
from trainer.seedset import build_seed_set


def make_dataset(root: Path, n: int) -> Path:
    crops = sorted((build_seed_set(progress=False) / "train").rglob("*.png"))
    for k in range(n):
        source = crops[k % len(crops)]
        folder = root / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / f"{k:06d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1536)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embed_rate_"))
    try:
        dataset = open_datasets([make_dataset(work / "faces", args.n)])
        crops = np.stack([cv2.imread(dataset.path(i)) for i in range(len(dataset))])
        embedder = make_embedder("sface-2021dec", "cpu", None)
        embedder.embed(crops[:64])  # warm-up
        started = time.perf_counter()
        embedder.embed(crops)
        bare = len(crops) / (time.perf_counter() - started)
        print(f"bare embedder, crops in memory, all cores: {bare:7.1f} images/s", flush=True)
        single = embed_to_store(dataset, work / "one", workers=1, progress=False)
        print(f"store, this process, all cores:            {single.images_per_s:7.1f} images/s", flush=True)
        many = embed_to_store(dataset, work / "many", workers=args.workers, progress=False)
        print(f"store, {args.workers} processes x 1 thread:             {many.images_per_s:7.1f} images/s "
              "(worker start-up included)", flush=True)
        print(f"images_per_s={many.images_per_s:.1f} ratio_to_bare={many.images_per_s / bare:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
