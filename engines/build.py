"""Build a TensorRT plan from an ONNX model (TensorRT 10 and 11 Python API).

Precision comes from a strongly typed network: the types in the ONNX file decide (an
FP16 export for FP16), because TensorRT 11 has no FP16/INT8 builder flags. TF32, which
TensorRT turns on by default for FP32 layers, is cleared unless the plan is named
``tf32``: a plan called fp32 computes in fp32. One optimisation profile spans batch
1..max_batch. Plans are built for this TensorRT version and this GPU only (not
version-compatible: see ``engines/backends/tensorrt.py``). Needs the full ``tensorrt``
package (builder and ONNX parser) and a GPU; :func:`build_unavailable_reason` says why not.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from engines.errors import ModelError
from engines.paths import sha256_file

PRECISIONS = ("fp16", "fp32", "tf32")


@dataclass(frozen=True)
class BuiltPlan:
    path: Path
    precision: str
    tensorrt_version: str
    gpu: str
    compute_capability: str
    max_batch: int
    tf32: bool
    sha256: str


def build_unavailable_reason() -> str | None:
    """Why a plan cannot be built here, or None."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return "the tensorrt package (with builder and ONNX parser) is not installed"
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        return "the installed TensorRT is a lean runtime without builder or ONNX parser"
    from engines.backends.tensorrt import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


def build_plan(onnx_path: Path, plan_path: Path, input_shape_chw: tuple[int, int, int], precision: str = "fp16",
               max_batch: int = 64, workspace_bytes: int = 2 << 30) -> BuiltPlan:
    """Parse ``onnx_path`` (already in the precision's types) and write a serialized engine to ``plan_path``."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    reason = build_unavailable_reason()
    if reason:
        raise ModelError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    from engines.backends.tensorrt import tensorrt_runtime

    runtime, reason = tensorrt_runtime()
    if runtime is None:
        raise ModelError(f"cannot build a TensorRT engine: {reason}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: an fp32 plan must not round to TF32
    tf32 = config.get_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, *input_shape_chw), (max(1, max_batch // 2), *input_shape_chw),
                      (max_batch, *input_shape_chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.write_bytes(bytes(serialized))
    return BuiltPlan(plan_path, precision, runtime.version, runtime.gpu, runtime.compute_capability, max_batch,
                     bool(tf32), sha256_file(plan_path))
