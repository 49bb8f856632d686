"""Benchmark: what each freeze point costs, to plan a rebuild that fits a CPU's hour.

For each cut (number of frozen backbone blocks), on real aligned crops: the feature cache
build (images/s, both orientations, through the same code ``trainer fit`` runs) and one
training epoch from the cache (images/s, validation included), as wall and CPU seconds.
Then the extrapolation to a rebuild's fit: ``--labelled`` images cached once and
``--epochs`` epochs over the training share. Labels are random (speed does not depend
on them). Cut 0 (the reference: whole network trains, no cache) runs on fewer images.

    python bench/fit_speed.py --data /work/shared/data/faces/pins/train --images 2000

Last line: ``cut=<K> cache_s=… epoch_s=… fit_min=…`` for the fastest cut. On a shared
machine, compare the CPU columns: wall time there includes other people's work.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import argparse
import json
import os
import random
import tempfile
import time
from dataclasses import replace

import trainer  # noqa: F401  (sets OpenMP's wait policy before torch loads)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _labels(data: Path, count: int, target: Path, seed: int = 0) -> int:
    paths = sorted(str(p) for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = random.Random(seed)
    chosen = rng.sample(paths, min(count, len(paths)))
    target.write_text("path,identity,label,mean_pos_sim,mean_neg_sim,n_pos\n" + "".join(
        f"{p},{Path(p).parent.name},{rng.uniform(5, 95):.3f},0,0,1\n" for p in chosen))
    return len(chosen)


def measure(cut: int, labels: Path, work: Path, batch: int, workers: int) -> dict:
    from trainer.fit import cache_features, fit
    from trainer.fit_options import FitOptions
    from trainer.sddfiqa import RegressorParams

    options = FitOptions(batch_size=batch, frozen_blocks=cut, cache_dir=str(work / "features"), workers=workers)
    params = replace(RegressorParams(), epochs=1)
    wall, cpu = time.perf_counter(), _cpu()
    report = cache_features(labels, params, options, progress=False)
    cache = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu() - cpu,
             "images": report.computed if report else 0, "bytes": report.bytes_on_disk if report else 0}
    wall, cpu = time.perf_counter(), _cpu()
    fit(labels, work / f"fit-{cut}", params, options, progress=False)
    fit_wall, fit_cpu = time.perf_counter() - wall, _cpu() - cpu
    history = json.loads((work / f"fit-{cut}" / "fit.json").read_text())["history"][0]
    # The epoch's own share of the fit call (the rest is loading the model, hashing images
    # to find their cached features, and writing the checkpoint).
    share = history["seconds"] / fit_wall
    return {"cache": cache, "epoch": {"wall_s": history["seconds"], "cpu_s": fit_cpu * share}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/faces/pins/train"))
    parser.add_argument("--images", type=int, default=2000, help="images per cached cut")
    parser.add_argument("--images-full", type=int, default=96, help="images for cut 0 (whole network trains)")
    parser.add_argument("--cuts", default="0,24,25,27")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--labelled", type=int, default=18945,
                        help="images a rebuild labels (pins/train + celeba: 11,523 + 7,422 in identities of 2+)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    args = parser.parse_args()

    import torch

    print(f"torch threads {torch.get_num_threads()} (OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY')}), "
          f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for cut in (int(c) for c in args.cuts.split(",")):
            labels = work / f"labels-{cut}.csv"
            n = _labels(args.data, args.images_full if cut == 0 else args.images, labels)
            result = measure(cut, labels, work, args.batch_size, args.workers)
            epoch_images = n  # an epoch trains on (1 - val) and validates on val: all n images pass once
            cache_rate = (result["cache"]["images"] / result["cache"]["wall_s"]) if cut else 0.0
            cache_cpu_rate = (result["cache"]["images"] / result["cache"]["cpu_s"]) if cut else 0.0
            epoch_rate = epoch_images / result["epoch"]["wall_s"]
            epoch_cpu_rate = epoch_images / result["epoch"]["cpu_s"]
            scale = args.labelled
            cache_s = scale / cache_rate if cut else 0.0
            epoch_s = scale / epoch_rate
            rows.append({"cut": cut, "n": n, "cache_img_s": cache_rate, "cache_img_cpu_s": cache_cpu_rate,
                         "epoch_img_s": epoch_rate, "epoch_img_cpu_s": epoch_cpu_rate, "cache_s": cache_s,
                         "epoch_s": epoch_s, "fit_min": (cache_s + args.epochs * epoch_s) / 60,
                         "fit_min_cpu2": ((scale / cache_cpu_rate if cut else 0.0)
                                          + args.epochs * scale / epoch_cpu_rate) / 60 / 2,
                         "bytes_per_image": result["cache"]["bytes"] / max(1, result["cache"]["images"])})
            r = rows[-1]
            print(f"cut {cut:>2}: {n} images  cache {r['cache_img_s']:6.1f} img/s ({r['cache_img_cpu_s']:6.1f} per "
                  f"CPU s)  epoch {r['epoch_img_s']:7.1f} img/s ({r['epoch_img_cpu_s']:7.1f} per CPU s)  "
                  f"{r['bytes_per_image'] / 1024:.0f} KiB/img", flush=True)
    print(f"\nextrapolated to {args.labelled} labelled images, {args.epochs} epochs "
          "(wall: as measured now; cpu/2: CPU seconds over 2 cores, a quiet machine's best case)")
    print(f"{'cut':>4} {'cache min':>10} {'epoch s':>9} {'fit min':>9} {'fit min cpu/2':>14} {'cache GiB':>10}")
    for r in rows:
        print(f"{r['cut']:>4} {r['cache_s'] / 60:>10.1f} {r['epoch_s']:>9.0f} {r['fit_min']:>9.1f} "
              f"{r['fit_min_cpu2']:>14.1f} {r['bytes_per_image'] * args.labelled / 2**30:>10.2f}")
    best = min(rows, key=lambda r: r["fit_min"])
    print(f"cut={best['cut']} cache_s={best['cache_s']:.0f} epoch_s={best['epoch_s']:.0f} "
          f"fit_min={best['fit_min']:.1f}")


if __name__ == "__main__":
    main()
