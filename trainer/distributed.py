"""One process or many: the training world as ``torchrun`` describes it.

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` (plus the rendezvous address). Without them a run
is a world of one, and every code path stays the same: the process group, the distributed
sampler and the collectives simply have one member. Backends: NCCL on CUDA GPUs, gloo on
CPUs. Commands that need no model replica (``trainer embed`` filling the embedding store)
use :func:`rank_world` and :func:`wait_for_all` instead of a :class:`World`. torch is
imported where it is used, so commands that only ask where they stand start quickly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from engines.errors import FacegateError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process stands among the training processes."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and logs; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise FacegateError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(requested: str, local_rank: int) -> str:
    """``auto``: this rank's GPU when torch sees one, else ``cpu``; ``cuda``: this rank's GPU or an error;
    any other name as given."""
    if requested == "auto" and not os.path.exists("/dev/nvidiactl"):
        return "cpu"  # no NVIDIA driver: no GPU to ask torch about
    if requested in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{local_rank}"
        if requested == "cuda":
            raise FacegateError("--device cuda asked for, but torch sees no CUDA GPU")
        return "cpu"
    return requested


def start_world(device: str = "auto", timeout_s: float = 1800.0) -> World:
    """Join the process group torchrun set up (or make a world of one) on the right device."""
    rank, size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank, local_size = _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", size)
    import torch
    import torch.distributed as dist

    target = torch.device(resolve_device(device, local_rank))
    if target.type == "cuda":
        torch.cuda.set_device(target)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if size > 1 and not dist.is_initialized():
        # The timeout covers the longest wait at a barrier: rank 0 writing a checkpoint or
        # one rank finishing its share of the feature cache while the others wait.
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        log.info("rank %s of %s on %s (%s)", rank, size, target, backend)
    return World(rank, size, local_rank, local_size, target, backend)


def end_world(world: World) -> None:
    """Leave the process group (a world of one has none)."""
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def sum_across(world: World, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (identity in a world of one)."""
    if not world.distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=world.device if world.backend == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def cpu_threads_per_process(world: World) -> int:
    """This process's fair share of the machine's cores (torchrun starts one per device)."""
    return max(1, (os.cpu_count() or 1) // max(1, world.local_size))


# Embedding a large set takes hours: the default 30-minute collective timeout is too short.
EMBEDDING_BARRIER_TIMEOUT = timedelta(hours=72)


def rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)


def wait_for_all(size: int) -> None:
    """A gloo barrier among ``size`` ranks (with or without GPUs); nothing to wait for in a world of one."""
    if size <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=EMBEDDING_BARRIER_TIMEOUT)
    dist.barrier()
