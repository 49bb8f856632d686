"""Checkpoints and other resumable files, written so that a kill never leaves half a file.

Everything a run resumes from is written to a temporary name in the same folder, flushed
to disk, then renamed over the target: a reader sees the old file or the new one, never a
torn one. A kill between the two leaves only a ``*.tmp-<pid>`` file, ignored on resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from engines.errors import ModelError


def write_atomically(target: Path, write) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``target``, flush it, rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def save_atomically(state: dict, target: Path) -> Path:
    """``torch.save`` to ``target`` through a temporary file and a rename."""
    return write_atomically(target, lambda handle: torch.save(state, handle))


def write_text_atomically(text: str, target: Path) -> Path:
    return write_atomically(target, lambda handle: handle.write(text.encode()))


def write_json_atomically(data: object, target: Path) -> Path:
    return write_text_atomically(json.dumps(data, indent=2) + "\n", target)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with a clear error for a missing or corrupt file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many kinds for damaged files
        raise ModelError(f"checkpoint {path} is corrupt or not a facegate checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ModelError(f"checkpoint {path} is not a facegate checkpoint (no model/epoch)")
    return state
