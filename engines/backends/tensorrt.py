"""TensorRT backend (GPU): a serialized plan run through pycuda device buffers.

Written against the TensorRT 10/11 runtime API (named I/O tensors, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). ``tensorrt`` and ``pycuda`` are imported
only here and only when used, so machines without a GPU never load them; every runtime
method called is listed in :data:`RUNTIME_API` and checked against the lean runtime's
bindings by the tests.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from engines.errors import ModelError

# Runtime classes and the members this module uses (checked by tests/test_tensorrt_api.py).
RUNTIME_API = {
    "Runtime": ("deserialize_cuda_engine",),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                    "get_tensor_profile_shape", "create_execution_context"),
    "IExecutionContext": ("set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3"),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF", "INT32", "INT8", "BOOL"),
    "Logger": ("WARNING",),
}


def _import_tensorrt():
    """The full ``tensorrt`` package, or the lean runtime bindings (inference only)."""
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can (package, pycuda and a GPU)."""
    if _import_tensorrt() is None:
        return "the tensorrt package is not installed (pip install 'facegate[gpu]' on a GPU machine)"
    try:
        import pycuda.driver as cuda
    except ImportError:
        return "pycuda is not installed (it needs the CUDA toolkit to build)"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU is visible"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError
        return f"CUDA is unusable: {exc}"
    return None


def _numpy_dtype(trt, dtype) -> np.dtype:
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
             trt.DataType.INT8: np.int8, trt.DataType.BOOL: np.bool_}
    return np.dtype(table[dtype])


class TensorRTBackend:
    """Runs a TensorRT plan; batches larger than the plan's profile are split."""

    def __init__(self, plan_path: Path, device: int = 0) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise ModelError(f"TensorRT backend unavailable: {reason}")
        import pycuda.driver as cuda

        trt = _import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self._cuda_context = cuda.Device(device).retain_primary_context()
        self._cuda_context.push()
        try:
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
            if self._engine is None:
                raise ModelError(f"TensorRT could not load {plan_path} (built for another GPU or version?)")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
        finally:
            self._cuda_context.pop()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtypes = {n: _numpy_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}
        # Profile 0: (min, opt, max) shapes of the first input; the batch axis bounds a run.
        self.max_batch = int(self._engine.get_tensor_profile_shape(self.input_names[0], 0)[2][0])
        self._device: dict[str, tuple[object, int]] = {}  # name → (allocation, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        allocation, size = self._device.get(name, (None, 0))
        if allocation is None or size < nbytes:
            allocation = self._cuda.mem_alloc(max(nbytes, 1))
            self._device[name] = (allocation, nbytes)
        return int(allocation)

    def _run_chunk(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        for name in self.input_names:
            host = np.ascontiguousarray(inputs[name], dtype=self._dtypes[name])
            self._context.set_input_shape(name, tuple(host.shape))
            address = self._buffer(name, host.nbytes)
            cuda.memcpy_htod_async(address, host, self._stream)
            self._context.set_tensor_address(name, address)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            outputs[name] = cuda.pagelocked_empty(shape, self._dtypes[name])
            self._context.set_tensor_address(name, self._buffer(name, outputs[name].nbytes))
        if not self._context.execute_async_v3(self._stream.handle):
            raise ModelError("TensorRT execution failed")
        for name, host in outputs.items():
            cuda.memcpy_dtoh_async(host, self._device[name][0], self._stream)
        self._stream.synchronize()
        return {name: np.array(host, dtype=np.float32) for name, host in outputs.items()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(inputs.values())).shape[0]
        self._cuda_context.push()
        try:
            parts = [self._run_chunk({k: v[s : s + self.max_batch] for k, v in inputs.items()})
                     for s in range(0, batch, self.max_batch)]
        finally:
            self._cuda_context.pop()
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def close(self) -> None:
        self._device.clear()
        self._context = self._engine = self._runtime = None
        if getattr(self, "_cuda_context", None) is not None:
            self._cuda_context.detach()
            self._cuda_context = None
