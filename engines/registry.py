"""Which shipped model is current, per task (``engines/models/current.json``).

``trainer rebuild`` writes a new ``<name>-<version>`` folder and moves the pointer only
when the new model beats the current one on the same held-out pairs (or when forced).
"""

from __future__ import annotations

import json
from pathlib import Path

from engines.errors import ModelError
from engines.paths import MODELS_DIR

CURRENT_FILE = "current.json"


def _read(models_dir: Path) -> dict[str, str]:
    path = models_dir / CURRENT_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None
    return {str(k): str(v) for k, v in data.items()}


def current_model(task: str, models_dir: Path = MODELS_DIR) -> str:
    """Folder name of the current model for ``task`` (e.g. ``quality``)."""
    name = _read(models_dir).get(task)
    if not name:
        raise ModelError(f"no current {task} model: run `trainer rebuild` (see README)")
    return name


def set_current(task: str, name: str, models_dir: Path = MODELS_DIR) -> None:
    data = _read(models_dir)
    data[task] = name
    (models_dir / CURRENT_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
