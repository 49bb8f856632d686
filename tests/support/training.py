"""Helpers for the training tests: small labelled sets of real seed crops, waiting, killing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.support.servers import free_port
from trainer.seedset import read_index

LABELS_HEADER = "path,identity,label,mean_pos_sim,mean_neg_sim,n_pos\n"


def write_labels_csv(seed_set: Path, target: Path, count: int) -> list[str]:
    """A labels file over ``count`` training crops of the seed set (originals and degraded copies).

    The labels are a fixed function of each image (its mean brightness on 0..100): the
    tests here check training mechanics (freezing, caching, processes, resuming), and a
    label the network can learn keeps the losses meaningful without running the recogniser.
    """
    rows = [r for r in read_index(seed_set) if r.split == "train"]
    rows = rows[:: max(1, len(rows) // count)][:count]
    paths = [str(seed_set / r.path) for r in rows]
    lines = []
    for path, row in zip(paths, rows, strict=True):
        label = float(cv2.imread(path).mean()) / 255 * 100
        lines.append(f"{path},{row.identity},{label:.4f},0,0,1\n")
    target.write_text(LABELS_HEADER + "".join(lines))
    return paths


def trainer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", *args]


def torchrun_command(processes: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), "-m", "trainer.cli", *args]


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, as a crash or an out-of-memory kill would end it: no cleanup runs."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def file_identity(path: Path) -> tuple[int, int]:
    """Inode and modification time: unchanged when nothing rewrote the file."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def state_difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts' float tensors."""
    return max(float(np.abs(a[k].float().numpy() - b[k].float().numpy()).max()) for k in a if a[k].is_floating_point())
