"""Which recorded TensorRT plan, if any, fits the running TensorRT and GPU.

A serialized TensorRT engine runs only on the TensorRT version that built it (unless
built version-compatible, which ``trainer build`` does not do: see
``engines/backends/tensorrt.py``) and only on GPUs of the compute capability it was built
for. ``trainer build`` records both in the manifest's ``engines`` entries; this module
compares them with the running ones, which it takes as inputs, so the choice is the same
logic on a CPU machine (tests) as on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.paths import sha256_file

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


def _mismatch(entry: dict, directory: Path, runtime: TensorRTRuntime) -> str | None:
    """Why this recorded plan cannot run here, or None."""
    version, capability = entry.get("tensorrt"), entry.get("compute_capability")
    if not version or not capability or not entry.get("file"):
        return "records no TensorRT version, compute capability or file (rebuild it with trainer build)"
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


def select_plan(engines: dict[str, dict], directory: Path, runtime: TensorRTRuntime) -> PlanChoice:
    """The best recorded plan that runs on ``runtime`` (fp16 first), or why none does."""
    if not engines:
        return PlanChoice(None, None, "no TensorRT plan is built for this model (trainer build)")
    rejected = []
    for key, entry in sorted(engines.items(), key=_rank):
        why = _mismatch(entry, directory, runtime)
        if why is None:
            return PlanChoice(key, directory / str(entry["file"]))
        rejected.append(f"{key}: {why}")
    return PlanChoice(None, None, f"no recorded TensorRT plan runs on TensorRT {runtime.version} with compute "
                                  f"capability {runtime.compute_capability} ({'; '.join(rejected)})")


def plan_key(precision: str, tensorrt_version: str, compute_capability: str) -> str:
    """Manifest key and file stem of a plan: one per precision, TensorRT version and GPU kind."""
    return f"{precision}-trt{tensorrt_version}-sm{compute_capability.replace('.', '')}"
