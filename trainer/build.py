"""``trainer build``: the TensorRT plan of a model folder, with its record beside it.

The plan is machine-specific (this TensorRT version, this GPU's compute capability), so
it is git-ignored (``*.plan``), named by a key naming both, and recorded in a file of its
own beside it (``model.<key>.plan.json``, git-ignored too), never in the tracked
``manifest.json``: building on a machine changes no tracked file. Several machines' plans
can sit side by side and the scorer picks the one that fits (``engines/plans.py``). The
FP16 ONNX copy the FP16 plan is built from is an intermediate in a temporary folder, never
written beside the model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from engines.build import BuiltPlan, build_plan, build_unavailable_reason
from engines.convert import to_float16_compute
from engines.errors import ModelError
from engines.manifest import read_manifest
from engines.modelfiles import model_dir, verified_file
from engines.plans import plan_file, plan_key, write_record
from engines.registry import current_model


def build_model(model: str | None, precision: str = "fp16", max_batch: int = 64) -> BuiltPlan:
    """Build (FP16 via an FP16 ONNX copy, or FP32 / TF32) and record the plan beside it."""
    reason = build_unavailable_reason()
    if reason:
        raise ModelError(f"TensorRT unavailable: {reason}")
    from engines.backends.tensorrt import tensorrt_runtime

    runtime, reason = tensorrt_runtime()
    if runtime is None:
        raise ModelError(f"TensorRT unavailable: {reason}")
    directory = model_dir(model or current_model("quality"))
    manifest = read_manifest(directory)
    if not manifest.file:
        raise ModelError(f"{manifest.tag} has no model file of its own to build from")
    source = verified_file(manifest, directory / manifest.file)
    width, height = manifest.input.size_wh or (112, 112)
    key = plan_key(precision, runtime.version, runtime.compute_capability)
    with tempfile.TemporaryDirectory(prefix="facegate-build-") as scratch:
        if precision == "fp16":
            fp16 = Path(scratch) / "model.fp16.onnx"
            onnx.save(to_float16_compute(onnx.load(str(source))), str(fp16))
            source = fp16
        plan = build_plan(source, directory / plan_file(key), (3, height, width), precision, max_batch)
    write_record(plan.path, {"key": key, "file": plan.path.name, "precision": precision, "tf32": plan.tf32,
                             "tensorrt": plan.tensorrt_version, "gpu": plan.gpu,
                             "compute_capability": plan.compute_capability, "max_batch": max_batch,
                             "sha256": plan.sha256, "model": manifest.tag, "model_sha256": manifest.sha256})
    return plan
