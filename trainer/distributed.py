"""Where this process stands under ``torchrun``: rank, world size, local rank, and a barrier.

Without ``torchrun`` a process is rank 0 of a world of one, and the barrier does nothing,
so every command behaves the same whether it runs alone or as one of many ranks.
"""

from __future__ import annotations

import os
from datetime import timedelta

# Embedding a large set takes hours: the default 30-minute collective timeout is too short.
BARRIER_TIMEOUT = timedelta(hours=72)


def rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def barrier(world: int) -> None:
    """Wait for every rank (gloo: works with or without GPUs); nothing to wait for in a world of one."""
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    dist.barrier()
