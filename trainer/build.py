"""``trainer build``: the TensorRT plan of a model folder, recorded in its manifest."""

from __future__ import annotations

import onnx

from engines.build import BuiltPlan, build_plan, build_unavailable_reason
from engines.convert import to_float16_compute
from engines.errors import ModelError
from engines.manifest import read_manifest, write_manifest
from engines.modelfiles import model_dir, verified_file
from engines.registry import current_model


def build_model(model: str | None, precision: str = "fp16", max_batch: int = 64) -> BuiltPlan:
    """Build (FP16 via an FP16 ONNX copy, or FP32) and record the plan in the manifest."""
    reason = build_unavailable_reason()
    if reason:
        raise ModelError(f"TensorRT unavailable: {reason}")
    directory = model_dir(model or current_model("quality"))
    manifest = read_manifest(directory)
    if not manifest.file:
        raise ModelError(f"{manifest.tag} has no model file of its own to build from")
    source = verified_file(manifest, directory / manifest.file)
    if precision == "fp16":
        fp16 = directory / "model.fp16.onnx"
        onnx.save(to_float16_compute(onnx.load(str(source))), str(fp16))
        source = fp16
    width, height = manifest.input.size_wh or (112, 112)
    import tensorrt

    key = f"{precision}-trt{tensorrt.__version__}"
    plan = build_plan(source, directory / f"model.{key}.plan", (3, height, width), max_batch)
    engines = dict(manifest.engines)
    engines[key] = {"file": plan.path.name, "precision": precision, "tensorrt": plan.tensorrt_version,
                    "gpu": plan.gpu, "compute_capability": plan.compute_capability, "max_batch": max_batch}
    write_manifest(directory, manifest.model_copy(update={"engines": engines}))
    return plan
