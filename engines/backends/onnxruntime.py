"""ONNX Runtime backend: the CPU path, and the reference every other backend matches."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from engines.convert import prelu_as_affine_relu
from engines.errors import ModelError

log = logging.getLogger(__name__)


def runtime_graph(model_path: Path) -> bytes:
    """The model's bytes as ONNX Runtime should run them: per-channel PReLU rewritten.

    The file on disk (checked against its manifest) is never changed; the rewrite happens
    in memory each time a session is made (see :func:`prelu_as_affine_relu` for why).
    """
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"cannot parse ONNX model {model_path}: {str(exc).splitlines()[0]}") from None
    model, rewritten = prelu_as_affine_relu(model)
    log.debug("%s: %d PReLU nodes rewritten for ONNX Runtime", model_path.name, rewritten)
    return model.SerializeToString()


class OnnxRuntimeBackend:
    """An ``InferenceSession`` behind the :class:`engines.backends.Backend` protocol."""

    def __init__(self, model_path: Path, threads: int | None = None, spin: bool = False) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("FACEGATE_ORT_THREADS", "0"))
        options.log_severity_level = 3
        # By default idle worker threads sleep instead of spinning: in a gate that runs small
        # batches several times a second, spinning burns a core for nothing. Offline batch
        # scoring (``spin=True``) gains some throughput from it.
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                runtime_graph(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load {model_path}: {str(exc).splitlines()[0]}") from None
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(list(self.output_names), inputs)
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
