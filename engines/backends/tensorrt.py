"""TensorRT backend (GPU): a serialized plan run through pycuda, with page-locked buffers.

Written against the TensorRT 10/11 runtime API (named I/O tensors, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). ``tensorrt`` and ``pycuda`` are imported
only here and only when used, so machines without a GPU never load them. Every runtime
call is declared in :data:`RUNTIME_API` with its signature; ``tests/test_tensorrt.py``
checks the declarations against the lean runtime's bindings (their pybind11 signatures)
and that this module calls nothing undeclared and checks every boolean result.

Only the full ``tensorrt`` package runs our plans, never the lean runtime: the lean
runtime loads version-compatible plans only (``BuilderFlag.VERSION_COMPATIBLE``), which
NVIDIA documents as possibly slower than plans built for one version, and which would buy
us little: a plan is tied to the GPU's compute capability anyway, ``trainer build`` makes
it on the machine that runs it, and after a TensorRT upgrade the gate scores on ONNX
Runtime (one warning) until ``trainer build`` is run again.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from pathlib import Path

import numpy as np

from engines.errors import ModelError
from engines.plans import TensorRTRuntime

log = logging.getLogger(__name__)

# Every TensorRT runtime member this module uses, as ``Class.member`` → ``(parameters) -> result``
# in the bindings' own pybind11 signatures (``property`` for attributes).
RUNTIME_API: dict[str, str] = {
    "Logger.__init__": "(min_severity) -> None",
    "Runtime.__init__": "(logger) -> None",
    "Runtime.deserialize_cuda_engine": "(serialized_engine) -> ICudaEngine",
    "ICudaEngine.num_io_tensors": "property",
    "ICudaEngine.get_tensor_name": "(index) -> str",
    "ICudaEngine.get_tensor_mode": "(name) -> TensorIOMode",
    "ICudaEngine.get_tensor_dtype": "(name) -> DataType",
    "ICudaEngine.get_tensor_profile_shape": "(name, profile_index) -> list[Dims]",
    "ICudaEngine.create_execution_context": "(strategy) -> IExecutionContext",
    "IExecutionContext.set_input_shape": "(name, shape) -> bool",
    "IExecutionContext.get_tensor_shape": "(name) -> Dims",
    "IExecutionContext.set_tensor_address": "(name, memory) -> bool",
    "IExecutionContext.execute_async_v3": "(stream_handle) -> bool",
}
# Enum members used (checked the same way).
RUNTIME_ENUMS: dict[str, tuple[str, ...]] = {
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF", "BF16", "INT8", "UINT8", "INT32", "INT64", "BOOL"),
    "ILogger.Severity": ("WARNING",),
}

CU_CTX_SCHED_BLOCKING_SYNC = 0x04  # the primary-context flags FFmpeg's NVDEC insists on


def _import_tensorrt():
    """The full ``tensorrt`` package (never the lean runtime: see the module docstring), or None."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        return None


def _lean_runtime_installed() -> bool:
    for name in ("tensorrt_lean", "tensorrt_lean_bindings"):
        try:
            importlib.import_module(name)
            return True
        except ImportError:
            continue
    return False


def tensorrt_runtime(device: int = 0) -> tuple[TensorRTRuntime | None, str]:
    """The running TensorRT version and GPU, or None and why TensorRT cannot run here."""
    trt = _import_tensorrt()
    if trt is None:
        if _lean_runtime_installed():
            return None, ("only the TensorRT lean runtime is installed; it runs version-compatible plans only, "
                          "and trainer build makes plans for one TensorRT version (pip install 'facegate[gpu]')")
        return None, "the tensorrt package is not installed (pip install 'facegate[gpu]' on a GPU machine)"
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None, "pycuda is not installed (it builds against the CUDA toolkit headers and the NVIDIA driver)"
    try:
        cuda.init()
        if cuda.Device.count() <= device:
            return None, "no CUDA GPU is visible"
        major, minor = cuda.Device(device).compute_capability()
        name = cuda.Device(device).name()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError
        return None, f"CUDA is unusable: {exc}"
    return TensorRTRuntime(str(trt.__version__), f"{major}.{minor}", name), ""


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can (full package, pycuda and a GPU)."""
    runtime, reason = tensorrt_runtime()
    return None if runtime else reason


def numpy_dtype(trt, dtype, tensor: str) -> np.dtype:
    """The numpy type of a TensorRT tensor type; a clear ModelError for types numpy lacks.

    BF16 has no numpy type of its own: ``ml_dtypes.bfloat16`` (installed with onnx) stands
    in when present. FP8, FP4, INT4 and E8M0 I/O tensors are not supported.
    """
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
             trt.DataType.UINT8: np.uint8, trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64,
             trt.DataType.BOOL: np.bool_}
    if dtype in table:
        return np.dtype(table[dtype])
    if dtype == trt.DataType.BF16:
        try:
            import ml_dtypes
        except ImportError:
            raise ModelError(f"tensor {tensor} is BF16, which needs the ml_dtypes package "
                             "(pip install ml_dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    raise ModelError(f"tensor {tensor} has TensorRT type {getattr(dtype, 'name', dtype)}, "
                     "which this backend cannot exchange with numpy")


def _volume(shape) -> int:
    return int(np.prod([int(d) for d in shape], dtype=np.int64))


class PlanIO:
    """An execution context with its buffers, allocated once at the profile's largest shapes.

    Each tensor gets one page-locked host buffer and one device buffer sized for the
    optimisation profile's maximum (so copies are truly asynchronous and nothing is
    allocated per batch); a batch uses the leading part of each.
    """

    def __init__(self, trt, cuda, engine, context, stream) -> None:
        self._cuda, self._engine, self._context, self._stream = cuda, engine, context, stream
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self.dtypes = {n: numpy_dtype(trt, engine.get_tensor_dtype(n), n) for n in names}
        # Profile 0: (min, opt, max) shapes of each input; the batch axis bounds one run.
        max_shapes = {n: tuple(int(d) for d in engine.get_tensor_profile_shape(n, 0)[2]) for n in self.input_names}
        self.max_batch = min(shape[0] for shape in max_shapes.values())
        for name, shape in max_shapes.items():
            self._set_shape(name, shape)
        for name in self.output_names:  # output sizes follow from the largest inputs
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelError(f"output {name} has a data-dependent shape {shape}, which this backend cannot size")
            max_shapes[name] = shape
        self._host = {n: cuda.pagelocked_empty(_volume(max_shapes[n]), self.dtypes[n]) for n in names}
        self._device = {n: cuda.mem_alloc(max(1, self._host[n].nbytes)) for n in names}
        for name in names:
            if not context.set_tensor_address(name, int(self._device[name])):
                raise ModelError(f"TensorRT refused the device address of tensor {name}")

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(name, shape):
            raise ModelError(f"TensorRT refused shape {shape} for input {name} (outside the plan's profile?)")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch of at most ``max_batch``; outputs are fresh arrays (floats as float32)."""
        cuda, stream = self._cuda, self._stream
        for name in self.input_names:
            value = np.asarray(inputs[name])
            self._set_shape(name, value.shape)  # within the profile, so within the buffers
            host = self._host[name][: value.size].reshape(value.shape)
            np.copyto(host, value, casting="same_kind")
            cuda.memcpy_htod_async(self._device[name], host, stream)
        hosts = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            hosts[name] = self._host[name][: _volume(shape)].reshape(shape)
        if not self._context.execute_async_v3(stream.handle):
            raise ModelError("TensorRT execution failed")
        for name, host in hosts.items():
            cuda.memcpy_dtoh_async(host, self._device[name], stream)
        stream.synchronize()
        return {name: host.astype(np.float32) if host.dtype.kind == "f" or host.dtype.name == "bfloat16"
                else host.copy() for name, host in hosts.items()}

    def close(self) -> None:
        for allocation in self._device.values():
            allocation.free()
        self._device.clear()
        self._host.clear()


def _prefer_nvdec_context_flags(device: int) -> None:
    """Give the primary context FFmpeg's flags if it is not active yet (best effort).

    The gate's NVDEC decoders share the device's primary CUDA context, and FFmpeg refuses
    it when it is already active with other flags than ``CU_CTX_SCHED_BLOCKING_SYNC``
    (libavutil/hwcontext_cuda.c). The scorer is made before the cameras start, so it sets
    those flags before retaining the context. Blocking sync also stops a waiting scorer
    thread from spinning a core.
    """
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        handle, flags, active = ctypes.c_int(), ctypes.c_uint(), ctypes.c_int()
        if libcuda.cuDeviceGet(ctypes.byref(handle), device) != 0:
            return
        if libcuda.cuDevicePrimaryCtxGetState(handle, ctypes.byref(flags), ctypes.byref(active)) != 0:
            return
        if not active.value and flags.value != CU_CTX_SCHED_BLOCKING_SYNC:
            set_flags = getattr(libcuda, "cuDevicePrimaryCtxSetFlags_v2", None) or libcuda.cuDevicePrimaryCtxSetFlags
            set_flags(handle, ctypes.c_uint(CU_CTX_SCHED_BLOCKING_SYNC))
    except (OSError, AttributeError):
        return


class TensorRTBackend:
    """Runs a TensorRT plan on the device's primary CUDA context; large batches are split."""

    def __init__(self, plan_path: Path, device: int = 0) -> None:
        trt = _import_tensorrt()
        if trt is None:
            raise ModelError("TensorRT backend unavailable: the full tensorrt package is not installed")
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise ModelError("TensorRT backend unavailable: pycuda is not installed") from None
        try:
            cuda.init()
            _prefer_nvdec_context_flags(device)
            self._cuda_context = cuda.Device(device).retain_primary_context()
        except Exception as exc:  # pycuda's LogicError/RuntimeError: no device, driver trouble
            raise ModelError(f"TensorRT backend unavailable: CUDA is unusable: {exc}") from None
        self._cuda_context.push()
        try:
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
            if self._engine is None:
                raise ModelError(f"TensorRT could not load {plan_path} (built for another GPU or TensorRT version?)")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise ModelError(f"TensorRT could not make an execution context for {plan_path} (GPU memory?)")
            self._io = PlanIO(trt, cuda, self._engine, self._context, cuda.Stream())
        except Exception as exc:
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"TensorRT could not load {plan_path}: {exc}") from None
        self._cuda_context.pop()
        self.input_names, self.output_names = self._io.input_names, self._io.output_names
        self.max_batch = self._io.max_batch

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_in_chunks(self._io, inputs, self._cuda_context)

    def close(self) -> None:
        if getattr(self, "_cuda_context", None) is None:
            return
        self._cuda_context.push()
        try:
            self._io.close()
            self._context = self._engine = self._runtime = None
        finally:
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None


def run_in_chunks(io: PlanIO, inputs: dict[str, np.ndarray], cuda_context=None) -> dict[str, np.ndarray]:
    """Run any batch through ``io`` in chunks of its profile's largest batch."""
    batch = next(iter(inputs.values())).shape[0]
    if cuda_context is not None:
        cuda_context.push()
    try:
        parts = [io.run({k: v[s : s + io.max_batch] for k, v in inputs.items()})
                 for s in range(0, batch, io.max_batch)]
    finally:
        if cuda_context is not None:
            cuda_context.pop()
    return {name: np.concatenate([p[name] for p in parts]) for name in io.output_names}
