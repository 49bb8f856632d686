"""SFace's MobileFaceNet in torch, initialised from the recogniser's own ONNX weights.

SDD-FIQA initialises its quality regressor's backbone from the recognition model; SFace
is a MobileFaceNet-style network (13 depthwise/pointwise pairs, BN + PReLU after every
convolution, no residuals), so its weights map one-to-one, in graph order, onto
:class:`SFaceBackbone`. :func:`load_sface_weights` does that mapping and
:class:`SFaceEmbedding` reproduces SFace's embeddings (tested).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from engines.errors import ModelError

# (in, out, depthwise stride) of the 13 depthwise/pointwise pairs after conv_1 (3→32).
PAIRS = (
    (32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
    (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 1024, 2),
    (1024, 1024, 1),
)
FEATURE_SHAPE = (1024, 7, 7)
# SFace's BatchNorm epsilons (from its ONNX graph): part of the architecture, because a
# state dict does not carry them. A model rebuilt from a checkpoint with torch's default
# (1e-5) computes different features from the ones its head was trained on.
BLOCK_BN_EPS = 1e-3  # after every convolution
FEATURE_BN_EPS = 2e-5  # the closing BatchNorm of the feature map
EMBEDDING_BN_EPS = 2e-5  # the BatchNorm after the embedding's Gemm
# SFace normalises 0..255 input itself: (x − 127.5) × 0.0078125.
INPUT_MEAN, INPUT_SCALE = 127.5, 0.0078125


def _conv_bn_prelu(cin: int, cout: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=BLOCK_BN_EPS),
        nn.PReLU(cout),
    )


class SFaceBackbone(nn.Module):
    """Normalised RGB 112×112 → 1024×7×7 feature map (SFace up to its ``bn1``)."""

    def __init__(self) -> None:
        super().__init__()
        layers = [_conv_bn_prelu(3, 32, 3, 1, 1)]
        for cin, cout, stride in PAIRS:
            layers.append(_conv_bn_prelu(cin, cin, 3, stride, cin))
            layers.append(_conv_bn_prelu(cin, cout, 1, 1, 1))
        self.body = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(FEATURE_SHAPE[0], eps=FEATURE_BN_EPS)

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.bn(self.body(normalised))


class SFaceEmbedding(nn.Module):
    """The whole recogniser: 0..255 RGB → 128-d (unnormalised) embedding, as SFace."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = SFaceBackbone()
        self.fc = nn.Linear(int(np.prod(FEATURE_SHAPE)), 128)
        self.fc_bn = nn.BatchNorm1d(128, eps=EMBEDDING_BN_EPS)

    def forward(self, rgb_0_255: torch.Tensor) -> torch.Tensor:
        x = self.backbone((rgb_0_255 - INPUT_MEAN) * INPUT_SCALE)
        return self.fc_bn(self.fc(torch.flatten(x, 1)))


def _onnx_weights(onnx_path: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Conv/BN/PReLU parameters in graph order, plus the Gemm and final BN."""
    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:
        raise ModelError(f"cannot read recogniser ONNX {onnx_path}: {exc}") from None
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # fold constant Reshapes of weights (how SFace stores them)
        if node.op_type == "Reshape" and all(x in values for x in node.input):
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
    blocks: list[dict[str, np.ndarray]] = []
    tail: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            blocks.append({"conv": values[node.input[1]]})
        elif node.op_type == "BatchNormalization":
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            bn = {k: values[x] for k, x in zip(("weight", "bias", "mean", "var"), node.input[1:], strict=True)}
            bn["eps"] = np.float32(eps)
            if blocks and "bn" not in blocks[-1]:
                blocks[-1]["bn"] = bn
            elif "fc" in tail:
                tail["fc_bn"] = bn
            else:
                tail["bn"] = bn
        elif node.op_type == "PRelu":
            blocks[-1]["prelu"] = values[node.input[1]].reshape(-1)
        elif node.op_type == "Gemm":
            tail["fc"] = {"weight": values[node.input[1]], "bias": values[node.input[2]]}
    return blocks, tail


def _set_bn(module: nn.BatchNorm1d | nn.BatchNorm2d, bn: dict[str, np.ndarray]) -> None:
    module.weight.data.copy_(torch.tensor(np.array(bn["weight"])))
    module.bias.data.copy_(torch.tensor(np.array(bn["bias"])))
    module.running_mean.copy_(torch.tensor(np.array(bn["mean"])))
    module.running_var.copy_(torch.tensor(np.array(bn["var"])))
    if not np.isclose(module.eps, float(bn["eps"]), rtol=1e-3, atol=0):
        raise ModelError(f"the recogniser's BatchNorm epsilon {float(bn['eps']):g} is not the architecture's "
                         f"{module.eps:g}: a model rebuilt from a checkpoint would compute other features")


def load_sface_weights(model: SFaceEmbedding | SFaceBackbone, onnx_path: Path) -> None:
    """Copy SFace's ONNX weights into ``model`` (a whole embedder or just the backbone)."""
    blocks, tail = _onnx_weights(onnx_path)
    backbone = model.backbone if isinstance(model, SFaceEmbedding) else model
    layers = list(backbone.body)
    if len(blocks) != len(layers):
        raise ModelError(f"{onnx_path} has {len(blocks)} conv blocks, MobileFaceNet expects {len(layers)}")
    for layer, block in zip(layers, blocks, strict=True):
        conv, bn, prelu = layer
        if tuple(conv.weight.shape) != block["conv"].shape:
            raise ModelError(f"conv shape {block['conv'].shape} does not fit {tuple(conv.weight.shape)}")
        conv.weight.data.copy_(torch.tensor(np.array(block["conv"])))
        _set_bn(bn, block["bn"])
        prelu.weight.data.copy_(torch.tensor(np.array(block["prelu"])))
    _set_bn(backbone.bn, tail["bn"])
    if isinstance(model, SFaceEmbedding):
        model.fc.weight.data.copy_(torch.tensor(np.array(tail["fc"]["weight"])))
        model.fc.bias.data.copy_(torch.tensor(np.array(tail["fc"]["bias"])))
        _set_bn(model.fc_bn, tail["fc_bn"])


def sface_projection(onnx_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """SFace's last layers (Gemm + BatchNorm) folded into one affine map, weight and bias.

    Applied to the flattened 1024×7×7 features it gives SFace's raw 128-d embedding, whose
    length is the embedding-norm quality score (``engines.embedding_norm``).
    """
    from torch.nn.utils.fusion import fuse_linear_bn_eval

    embedder = SFaceEmbedding()
    load_sface_weights(embedder, onnx_path)
    folded = fuse_linear_bn_eval(embedder.fc.eval(), embedder.fc_bn.eval())
    return folded.weight.detach().clone(), folded.bias.detach().clone()
