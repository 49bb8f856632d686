"""A copy of the shipped quality model whose manifest carries a threshold table the test writes.

The manifest's sha256 covers ``model.onnx`` only, so the copy loads as the original does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engines.modelfiles import model_dir
from engines.registry import current_model

# An error-versus-reject curve shaped as real ones are (steep, then flat), FMR 1e-3.
SAMPLE_TABLE = {
    "fmr": 0.001,
    "data": "test held-out set",
    "recognizers": {
        "sface": [
            {"quality": 0.0, "discarded": 0.0, "fnmr": 0.200},
            {"quality": 10.0, "discarded": 0.05, "fnmr": 0.150},
            {"quality": 20.0, "discarded": 0.10, "fnmr": 0.110},
            {"quality": 30.0, "discarded": 0.20, "fnmr": 0.080},
            {"quality": 40.0, "discarded": 0.30, "fnmr": 0.064},
            {"quality": 50.0, "discarded": 0.45, "fnmr": 0.060},
            {"quality": 60.0, "discarded": 0.70, "fnmr": 0.010},
        ],
        "dlib-resnet": [
            {"quality": 0.0, "discarded": 0.0, "fnmr": 0.30},
            {"quality": 25.0, "discarded": 0.15, "fnmr": 0.20},
            {"quality": 50.0, "discarded": 0.45, "fnmr": 0.18},
        ],
    },
}


def model_with_table(target: Path, table: dict | None = SAMPLE_TABLE) -> Path:
    """Copy the current quality model into ``target`` with ``table`` as its threshold table."""
    source = model_dir(current_model("quality"))
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.png"))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.setdefault("evaluation", {})["thresholds"] = table
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target
