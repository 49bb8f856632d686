"""TensorRT plans of a model folder: their records, and which one fits the running TensorRT and GPU.

A serialized TensorRT engine runs only on the TensorRT version that built it (unless
built version-compatible, which ``trainer build`` does not do: see
``engines/backends/tensorrt.py``) and only on GPUs of the compute capability it was built
for. So plans are machine-specific and never committed (``*.plan`` is git-ignored), and
neither are their records: ``trainer build`` writes each plan's record beside it
(``model.<key>.plan.json``: TensorRT version, GPU, compute capability, precision, the plan's
sha256 and the sha256 of the model file it was built from), never into the tracked
``manifest.json``, which stays the model's contract. This module reads the records and
compares them with the running TensorRT and GPU, which it takes as inputs, so the choice is
the same logic on a CPU machine (tests) as on a GPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engines.paths import sha256_file

RECORD_SUFFIX = ".plan.json"  # model.<key>.plan.json beside model.<key>.plan

# fp16 is what ``trainer build`` makes by default; fp32 (TF32 off) next; tf32 last.
PRECISION_ORDER = ("fp16", "fp32", "tf32")


@dataclass(frozen=True)
class TensorRTRuntime:
    """The TensorRT package and GPU this process would run a plan on."""

    version: str  # e.g. "10.8.0.43": plans are only valid for the exact version
    compute_capability: str  # e.g. "8.9"
    gpu: str = ""


@dataclass(frozen=True)
class PlanChoice:
    """The plan to load (``key`` and ``path``), or why none fits (``reason``)."""

    key: str | None
    path: Path | None
    reason: str = ""


def _rank(item: tuple[str, dict]) -> tuple[int, str]:
    key, entry = item
    precision = str(entry.get("precision", ""))
    return (PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER), key)


def _mismatch(entry: dict, directory: Path, runtime: TensorRTRuntime, model_sha256: str) -> str | None:
    """Why this recorded plan cannot run here, or None."""
    if "unreadable" in entry:
        return f"its record is unreadable ({entry['unreadable']}; rebuild it with trainer build)"
    version, capability = entry.get("tensorrt"), entry.get("compute_capability")
    if not version or not capability or not entry.get("file") or not entry.get("model_sha256"):
        return "records no TensorRT version, compute capability, file or model (rebuild it with trainer build)"
    if entry["model_sha256"] != model_sha256:
        return (f"built from another model file (sha256 {str(entry['model_sha256'])[:12]}…, this model's is "
                f"{model_sha256[:12]}…: rebuild it with trainer build)")
    differences = []
    if str(version) != runtime.version:
        differences.append(f"built with TensorRT {version}, this is TensorRT {runtime.version}")
    if str(capability) != runtime.compute_capability:
        differences.append(f"built for compute capability {capability}, this GPU is {runtime.compute_capability}")
    if differences:
        return ", ".join(differences)
    path = directory / str(entry["file"])
    if not path.is_file():
        return f"{entry['file']} is missing (plans are machine-specific and not committed: run trainer build here)"
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        return f"{entry['file']} changed since it was built (rebuild it with trainer build)"
    return None


def select_plan(records: dict[str, dict], directory: Path, runtime: TensorRTRuntime,
                model_sha256: str) -> PlanChoice:
    """The best recorded plan that runs on ``runtime`` (fp16 first) and was built from the model
    file with ``model_sha256``, or why none does."""
    if not records:
        return PlanChoice(None, None, "no TensorRT plan is built for this model (trainer build)")
    rejected = []
    for key, entry in sorted(records.items(), key=_rank):
        why = _mismatch(entry, directory, runtime, model_sha256)
        if why is None:
            return PlanChoice(key, directory / str(entry["file"]))
        rejected.append(f"{key}: {why}")
    return PlanChoice(None, None, f"no recorded TensorRT plan runs on TensorRT {runtime.version} with compute "
                                  f"capability {runtime.compute_capability} ({'; '.join(rejected)})")


def plan_key(precision: str, tensorrt_version: str, compute_capability: str) -> str:
    """Key and file stem of a plan: one per precision, TensorRT version and GPU kind."""
    return f"{precision}-trt{tensorrt_version}-sm{compute_capability.replace('.', '')}"


def plan_file(key: str) -> str:
    """The plan's file name in its model folder (git-ignored: ``*.plan``)."""
    return f"model.{key}.plan"


def record_path(plan_path: Path) -> Path:
    """Where the record of ``plan_path`` lives: beside it (git-ignored like the plan)."""
    return plan_path.with_name(plan_path.name[: -len(".plan")] + RECORD_SUFFIX)


def write_record(plan_path: Path, record: dict) -> Path:
    """Write the record of a plan just built, whole or not at all (temporary file, then rename)."""
    path = record_path(plan_path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def recorded_plans(directory: Path) -> dict[str, dict]:
    """The records of the plans built in ``directory``, by key; an unreadable one says why."""
    records: dict[str, dict] = {}
    for path in sorted(Path(directory).glob(f"model.*{RECORD_SUFFIX}")):
        key = path.name[len("model."): -len(RECORD_SUFFIX)]
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            record = {"unreadable": f"{path.name}: {exc}"}
        records[key] = record
    return records
