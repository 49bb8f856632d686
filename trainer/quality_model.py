"""The SDD-FIQA quality regressor: MobileFaceNet backbone + the paper's quality head.

Head (official): Flatten → PReLU → Dropout(0.5) → Linear → 1, on the backbone's feature
map. Input: aligned 112×112 RGB, normalised as SFace does, (x − 127.5) / 128.

Training may freeze the first ``frozen_blocks`` conv blocks of the backbone (the
reference trains them all): :meth:`QualityRegressor.front` runs the frozen blocks (in
eval mode, so their BatchNorm statistics stay the recogniser's), :class:`TrainablePart`
the rest, from the features at the cut. ``frozen_blocks == BLOCKS`` freezes the whole
backbone, its closing BatchNorm included: only the head trains.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engines.errors import FacegateError
from trainer.mobilefacenet import FEATURE_SHAPE, INPUT_MEAN, INPUT_SCALE, PAIRS, SFaceBackbone

INPUT_STD = 1.0 / INPUT_SCALE  # 128: what the manifest records as the normalisation
BLOCKS = 1 + 2 * len(PAIRS)  # conv blocks in the backbone: conv_1, then a depthwise and a pointwise per pair

# Cut points whose feature maps are small enough to cache (values per image and orientation).
NAMED_CUTS = {
    "pair12-dw": 24,  # after the 12th pair's depthwise conv: 512×7×7 = 25,088
    "pair12": 25,  # after the 12th pair: 1024×7×7
    "backbone": BLOCKS,  # the whole backbone: 1024×7×7, only the head trains
}


def cut_shape(frozen_blocks: int) -> tuple[int, int, int]:
    """Shape (C, H, W) of the features after the first ``frozen_blocks`` blocks."""
    check_cut(frozen_blocks)
    channels, side = 3, 112
    if frozen_blocks >= 1:
        channels = 32
    for block in range(1, frozen_blocks):
        cin, cout, stride = PAIRS[(block - 1) // 2]
        if block % 2:  # depthwise: keeps channels, carries the stride
            side = (side + 2 - 3) // stride + 1
            channels = cin
        else:
            channels = cout
    return channels, side, side


def check_cut(frozen_blocks: int) -> None:
    if not 0 <= frozen_blocks <= BLOCKS:
        raise FacegateError(f"frozen blocks must be between 0 (train everything) and {BLOCKS} (head only), "
                            f"not {frozen_blocks}")


class QualityRegressor(nn.Module):
    """Normalised RGB crops → one quality score (trained on 0..100 pseudo-labels)."""

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        features = int(np.prod(FEATURE_SHAPE))
        self.backbone = SFaceBackbone()
        self.head = nn.Sequential(nn.Flatten(), nn.PReLU(features), nn.Dropout(dropout), nn.Linear(features, 1))

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(normalised))[:, 0]

    def front(self, normalised: torch.Tensor, frozen_blocks: int) -> torch.Tensor:
        """Features at the cut: the first ``frozen_blocks`` blocks (and the closing BN for all)."""
        x = self.backbone.body[:frozen_blocks](normalised)
        return self.backbone.bn(x) if frozen_blocks == BLOCKS else x

    def frozen_modules(self, frozen_blocks: int) -> list[nn.Module]:
        return list(self.backbone.body[:frozen_blocks]) + ([self.backbone.bn] if frozen_blocks == BLOCKS else [])


class TrainablePart(nn.Module):
    """What trains when the first ``frozen_blocks`` blocks are frozen: features at the cut → score.

    It shares its modules with the regressor, so training it trains the regressor. The
    head's dropout can take an explicit keep mask per sample (``keep``, already scaled by
    1 / (1 − p)), so that the randomness of a sample does not depend on which process or
    batch position it lands in (see ``trainer.fit_data``). PReLU is computed as
    ``where(x > 0, x, a·x)``: the same values as ``nn.PReLU``, whose backward over 50,176
    per-feature slopes is several times slower on a CPU.
    """

    def __init__(self, model: QualityRegressor, frozen_blocks: int) -> None:
        super().__init__()
        check_cut(frozen_blocks)
        self.frozen_blocks = frozen_blocks
        self.blocks = nn.Sequential(*model.backbone.body[frozen_blocks:])
        self.bn = model.backbone.bn if frozen_blocks < BLOCKS else nn.Identity()
        self.flatten, self.prelu, self.dropout, self.linear = model.head

    def forward(self, features: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.flatten(self.bn(self.blocks(features)))
        x = self.prelu(x)
        if self.training:
            x = x * keep if keep is not None else self.dropout(x)
        return self.linear(x)[:, 0]


def freeze(model: QualityRegressor, frozen_blocks: int) -> None:
    """Stop gradients into the frozen blocks and keep them in eval mode (BN statistics fixed)."""
    for module in model.frozen_modules(frozen_blocks):
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def crops_to_tensor(crops_bgr: np.ndarray) -> torch.Tensor:
    """N×112×112×3 BGR uint8 → N×3×112×112 normalised RGB float tensor."""
    rgb = np.ascontiguousarray(np.asarray(crops_bgr)[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    return (torch.from_numpy(rgb) - INPUT_MEAN) * INPUT_SCALE
