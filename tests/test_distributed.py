"""``trainer fit`` under torchrun: 2 CPU processes (gloo) against one, same global batch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from tests.support.training import state_difference, torchrun_command, trainer_command, write_labels_csv


def test_two_processes_match_one_with_the_same_global_batch(seed_set, tmp_path):
    """DDP over 2 processes trains what one process trains, within float32 summation order.

    The whole backbone is frozen (head only, its features cached): BatchNorm layers that
    train would compute their statistics over each process's half-batch (SyncBatchNorm
    exists only for GPUs, where fit uses it), which no longer matches one process by
    design. Flips and dropout stay on: they are drawn per sample, not per process. The
    set has 48 training images, a multiple of the global batch of 8, so no process pads
    its share. The feature cache of the 2-process run starts empty and is built by both
    processes, each computing half of its shards.
    """
    labels = tmp_path / "labels.csv"
    write_labels_csv(seed_set, labels, 64)  # 16 for validation (0.25), 48 for training
    common = ["fit", "--labels", str(labels), "--epochs", "3", "--batch-size", "8", "--val-fraction", "0.25",
              "--freeze-blocks", "backbone", "--lr", "1e-3", "--cache-shard-images", "8", "--quiet"]
    one = subprocess.run(trainer_command(*common, "--out", str(tmp_path / "one"), "--cache-dir",
                                         str(tmp_path / "features-one")),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun_command(2, *common, "--out", str(tmp_path / "two"), "--cache-dir",
                                          str(tmp_path / "features-two")),
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count("fit: checkpoint") == 1  # rank 0 speaks for the run

    import torch

    a = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=False)
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["epoch"] == b["epoch"] == 3
    # The head's last layer starts at weight 0 (bias at the mean label): training moved it.
    assert float(a["model"]["head.3.weight"].abs().max()) > 1e-3
    # Gradients summed in another order (an all-reduce of two halves) differ by float32
    # rounding; 18 Adam steps of about lr = 1e-3 keep the weights within 1e-5 of each other.
    assert state_difference(a["model"], b["model"]) < 1e-5
    one_mae = [h["val_mae"] for h in a["history"]]
    two_mae = [h["val_mae"] for h in b["history"]]
    np.testing.assert_allclose(two_mae, one_mae, atol=1e-4)

    report = json.loads((tmp_path / "two" / "fit.json").read_text())
    assert report["world_size"] == 2
    assert report["feature_cache"]["computed"] == 32  # rank 0's half of the 64 images
    shards = list(Path(tmp_path / "features-two").glob("*/*.keys"))
    assert len(shards) == 8 and sum(len(p.read_text().split()) for p in shards) == 64
