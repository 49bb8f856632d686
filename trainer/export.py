"""``trainer export``: checkpoint → ONNX (dynamic batch) + manifest.

The shipped file stores its weights as float16 (computing in fp32): the model is
exported from a copy whose BN-folded weights are already rounded to float16, so torch
(on that copy) and ONNX Runtime agree to float32 rounding.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from engines.convert import compress_weights_fp16
from engines.manifest import InputSpec, Manifest, write_manifest
from engines.paths import sha256_file
from trainer.fit import load_checkpoint
from trainer.fit_options import NORM_HEAD, PAPER_HEAD
from trainer.mobilefacenet import INPUT_MEAN
from trainer.quality_model import INPUT_STD, QualityRegressor

INPUT_NAME = "input"
OUTPUT_NAME = "quality"
MODEL_FILE = "model.onnx"
OPSET = 17


def fold_batchnorm(model: QualityRegressor) -> torch.nn.Module:
    """Eval-mode copy with every Conv+BN pair folded into one Conv (what ONNX will hold)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for layer in folded.backbone.body:
        layer[0] = fuse_conv_bn_eval(layer[0], layer[1])
        layer[1] = torch.nn.Identity()
    return folded


def round_to_float16(module: torch.nn.Module) -> torch.nn.Module:
    """Round every float parameter and buffer to the nearest float16 value (kept fp32)."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())
    return module


def model_head(state: dict) -> str:
    """The head kind a checkpoint was trained with (checkpoints from before heads had kinds: the paper's)."""
    return (state.get("options") or {}).get("head", PAPER_HEAD)


def shipped_torch_model(checkpoint: Path) -> torch.nn.Module:
    """The torch twin of the exported ONNX model: folded, fp16-rounded, eval mode."""
    state = load_checkpoint(checkpoint)
    model = QualityRegressor(state["params"]["dropout"], model_head(state))
    model.load_state_dict(state["model"])
    return round_to_float16(fold_batchnorm(model))


def export_onnx(checkpoint: Path, out_dir: Path, name: str, version: str, training: dict | None = None,
                evaluation: dict | None = None) -> Manifest:
    """Write ``out_dir/model.onnx`` and its manifest; return the manifest."""
    model = shipped_torch_model(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 112, 112),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    graph = compress_weights_fp16(onnx.load_from_string(buffer.getvalue()))
    onnx.checker.check_model(graph)
    target = out_dir / MODEL_FILE
    onnx.save(graph, str(target))
    state = load_checkpoint(checkpoint)
    manifest = Manifest(
        name=name,
        version=version,
        task="quality",
        file=MODEL_FILE,
        sha256=sha256_file(target),
        input=InputSpec(name=INPUT_NAME, size_wh=(112, 112), colour="RGB", mean=(INPUT_MEAN,) * 3,
                        std=(INPUT_STD,) * 3),
        outputs=(OUTPUT_NAME,),
        alignment="arcface_112",
        output_range=(0.0, 100.0),
        licence="MIT (weights derived from SFace, Apache-2.0)",
        notes="SDD-FIQA quality regressor: SFace MobileFaceNet backbone + Flatten/PReLU/Dropout/Linear head"
        + (" + w × the length of SFace's raw embedding (SFace's frozen last layer)" if model_head(state) == NORM_HEAD
           else "")
        + ", trained with Huber loss on SDD-FIQA pseudo-labels. Weights stored as float16, computed in fp32.",
        training=training or {"checkpoint_epoch": state["epoch"], "labels": state.get("labels"),
                              "train_images": state.get("train_images"), "params": state.get("params")},
        evaluation=evaluation,
    )
    write_manifest(out_dir, manifest)
    return manifest


def torch_scores(model: torch.nn.Module, crops_bgr: np.ndarray, batch: int = 64) -> np.ndarray:
    """Scores of the torch model for BGR crops (used to check the export)."""
    from trainer.quality_model import crops_to_tensor

    out = []
    with torch.no_grad():
        for start in range(0, len(crops_bgr), batch):
            out.append(model(crops_to_tensor(crops_bgr[start : start + batch])).numpy())
    return np.concatenate(out)
