"""Where facegate keeps files it derives (converted models, sample media, the seed set).

One cache root, overridable with ``FACEGATE_CACHE`` so tests and CI can isolate it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"


def cache_root() -> Path:
    """Return the cache root, creating it if needed."""
    env = os.environ.get("FACEGATE_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "facegate"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large files need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
