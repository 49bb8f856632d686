"""Benchmark: quality scoring through ONNX Runtime (batched) vs torch eager, same CPU and inputs.

Also the detector's frames per second at 640×360 and 1080p input. Last line:
``ratio=<ORT faces/s ÷ torch faces/s>`` (target ≥ 2).

    python bench/scorer.py [--faces 256] [--batch 32]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import argparse
import time

import cv2
import numpy as np
import torch


def faces_per_second(fn, crops: np.ndarray, batch: int, repeats: int = 2) -> float:
    fn(crops[:batch])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(crops), batch):
            fn(crops[start : start + batch])
        best = min(best, time.perf_counter() - started)
    return len(crops) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from engines.detector import Detector
    from engines.quality import QualityScorer
    from engines.registry import current_model
    from trainer.export import fold_batchnorm
    from trainer.quality_model import QualityRegressor, crops_to_tensor
    from trainer.seedset import build_seed_set, read_index

    seed = build_seed_set(progress=False)
    rows = [r for r in read_index(seed) if r.split == "heldout"][: args.faces]
    crops = np.stack([cv2.imread(str(seed / r.path)) for r in rows])
    while len(crops) < args.faces:
        crops = np.concatenate([crops, crops])[: args.faces]

    # Batch throughput configuration: ONNX Runtime's threads may spin between batches.
    scorer = QualityScorer(backend="onnxruntime", batch_size=args.batch, spin=True)
    # Torch eager runs the same network as the shipped ONNX file (BN folded into the convs,
    # eval mode). Speed does not depend on the weight values, so fresh weights serve.
    torch_model = fold_batchnorm(QualityRegressor()).eval()
    print(f"model: {current_model('quality')}")

    def torch_score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch_model(crops_to_tensor(batch)).numpy()

    ort_fps = faces_per_second(scorer.score, crops, args.batch)
    torch_fps = faces_per_second(torch_score, crops, args.batch)
    print(f"threads: torch {torch.get_num_threads()}, ONNX Runtime default (spinning allowed)")
    print(f"onnxruntime batched ({args.batch}): {ort_fps:8.1f} faces/s")
    print(f"torch eager  batched ({args.batch}): {torch_fps:8.1f} faces/s")

    detector = Detector(max_side=None)
    frame = cv2.resize(cv2.imread(str(seed / rows[0].path)), (640, 360))
    for name, image, det in (("640x360", frame, detector), ("1080p (detected at 640)", cv2.resize(frame, (1920, 1080)),
                                                           Detector(max_side=640))):
        det.detect(image)
        started = time.perf_counter()
        for _ in range(20):
            det.detect(image)
        print(f"detector {name}: {20 / (time.perf_counter() - started):6.1f} frames/s")
    print(f"ratio={ort_fps / torch_fps:.2f}")



if __name__ == "__main__":
    main()
