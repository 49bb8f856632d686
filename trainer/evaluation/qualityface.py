"""The published peer model ``qualityface==1.0.3`` (PyPI, MIT), run without its package code.

Its network: torchvision's MobileNetV2 ``features``, the 1280 channels mean-pooled over
space, one ``Linear(1280, 1)``; input RGB scaled to 0..1 then normalised with mean 0.5 and
std 0.5, trained on 128×128 face crops (WIDER FACE). Its package cannot be imported here:
``qualityface/__init__`` loads the model at import through ``siriusbackbone``, which imports
torchvision, and torchvision's wheels on these machines do not import beside our CPU torch
(NOTES). So the architecture is written out below in torch and the checkpoint
``checkpoints/last.pth`` is found with ``importlib`` without importing the package, checked
by sha256 and loaded strictly: every one of its 628 tensors must land in a parameter or
buffer of the same name and shape (the ``module.`` prefix of ``nn.DataParallel`` removed;
the checkpoint also carries the ImageNet classifier and a second name for every feature
tensor, which the module structure below reproduces). ``tests/fixtures/qualityface_reference.json``
holds outputs of qualityface's own code (torch 2.14.1 + torchvision 0.29.1 in a separate
environment) that this re-implementation must reproduce.

Our crops are ArcFace-aligned 112×112; they are resized to 128×128 (bilinear) before scoring,
the size it was trained on. Scoring runs the re-implemented network exported once to ONNX on
ONNX Runtime (about 5× faster than torch eager here; outputs equal to 1e-6).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engines.errors import ModelError
from engines.paths import sha256_file

DISTRIBUTION = "qualityface==1.0.3"
CHECKPOINT = "checkpoints/last.pth"
CHECKPOINT_SHA256 = "95a14bfeb706b4919eed7a035c2380cafbb548e590770968af5be0321ae190b7"
INPUT_SIZE = 128
TAG = "qualityface@1.0.3"
# torchvision's MobileNetV2 (width 1.0): expansion t, channels c, repeats n, first stride s.
_INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))


def checkpoint_path() -> Path:
    """``qualityface/checkpoints/last.pth`` of the installed wheel, located without importing it."""
    spec = importlib.util.find_spec("qualityface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the peer model needs `pip install --no-deps {DISTRIBUTION}` (see README)")
    path = Path(next(iter(spec.submodule_search_locations))) / CHECKPOINT
    if not path.is_file():
        raise ModelError(f"{path} not found: is {DISTRIBUTION} installed completely?")
    digest = sha256_file(path)
    if digest != CHECKPOINT_SHA256:
        raise ModelError(f"{path}: sha256 {digest[:12]}… is not {DISTRIBUTION}'s checkpoint")
    return path


def _network():
    """QualityNet with the module names of qualityface's checkpoint."""
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                       nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2)], 32
            for expand, cout, repeats, stride in _INVERTED_RESIDUALS:
                for i in range(repeats):
                    layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            layers.append(conv_bn(cin, 1280, 1, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))  # ImageNet head, unused

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = MobileNetV2()
            # siriusbackbone wraps the same `features` a second time (IntermediateLayerGetter).
            self.backbone = nn.ModuleDict({"features": self.net.features})

    class QualityNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = Backbone()
            self.classify = nn.Linear(1280, 1)

        def forward(self, x):
            features = self.backbone.backbone["features"](x)
            return self.classify(features.mean(dim=(2, 3)))

    return QualityNet()


def load_network(path: Path | None = None):
    """The network in eval mode with the checkpoint loaded strictly (no missing or unexpected keys)."""
    import torch

    state = torch.load(path or checkpoint_path(), map_location="cpu", weights_only=True)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    net = _network()
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(f"{DISTRIBUTION} checkpoint does not fit the re-implemented network: "
                         f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
    return net.eval()


def to_input(crops_bgr: np.ndarray) -> np.ndarray:
    """N×H×W×3 BGR uint8 → N×3×128×128 float32 as qualityface's test transform makes it."""
    import cv2

    resized = [c if c.shape[:2] == (INPUT_SIZE, INPUT_SIZE) else
               cv2.resize(c, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR) for c in crops_bgr]
    rgb = np.stack(resized)[..., ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(((rgb - 0.5) / 0.5).transpose(0, 3, 1, 2))


def onnx_path(cache: Path | None = None) -> Path:
    """The re-implemented network exported once to ONNX (ONNX Runtime runs it about 5× faster than torch
    eager on these CPUs), cached under the checkpoint's sha256."""
    import torch

    from engines.paths import cache_root

    target = (cache or cache_root()) / "models" / f"qualityface-1.0.3-{CHECKPOINT_SHA256[:12]}.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.onnx")
        example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
        torch.onnx.export(load_network(), example, str(tmp), input_names=["input"], output_names=["quality"],
                          dynamic_axes={"input": {0: "batch"}, "quality": {0: "batch"}}, dynamo=False)
        tmp.replace(target)
    return target


class QualityFaceScorer:
    """``score(aligned_crops) -> np.ndarray`` with qualityface's network (higher = better)."""

    tag = TAG

    def __init__(self, batch_size: int = 64, cache: Path | None = None, threads: int | None = None) -> None:
        from engines.backends.onnxruntime import OnnxRuntimeBackend

        self._backend = OnnxRuntimeBackend(onnx_path(cache), threads=threads)
        self.batch_size = batch_size

    def score(self, aligned_crops: np.ndarray) -> np.ndarray:
        out = [self._backend.run({"input": to_input(aligned_crops[start : start + self.batch_size])})["quality"]
               for start in range(0, len(aligned_crops), self.batch_size)]
        return np.concatenate(out).reshape(-1).astype(np.float32) if out else np.zeros((0,), np.float32)

    def close(self) -> None:
        self._backend.close()
