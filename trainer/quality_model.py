"""The SDD-FIQA quality regressor: MobileFaceNet backbone + the paper's quality head.

Head (official): Flatten → PReLU → Dropout(0.5) → Linear → 1, on the backbone's feature
map. Input: aligned 112×112 RGB, normalised as SFace does, (x − 127.5) / 128.

Training may freeze the first ``frozen_blocks`` conv blocks of the backbone (the
reference trains them all): :meth:`QualityRegressor.front` runs the frozen blocks (in
eval mode, so their BatchNorm statistics stay the recogniser's), :class:`TrainablePart`
the rest, from the features at the cut. ``frozen_blocks == BLOCKS`` freezes the whole
backbone, its closing BatchNorm included: only the head trains.

Head kinds (:data:`trainer.fit_options.HEADS`): ``sddfiqa`` is the paper's head alone. ``sddfiqa+norm`` adds
``w × ‖e‖``, the length of SFace's raw embedding ``e`` computed from the same feature map
by SFace's own frozen last layer (:class:`EmbeddingNormTerm`). The paper's head is linear
in the (PReLU'd) features and cannot form a length, and with a frozen backbone the
embedding norm alone ranks images about as well as it does (README, recipe round D); with
the norm as an input the head starts from the norm's best affine fit to the labels
(:func:`fit_norm_term`) and learns what the norm misses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engines.errors import FacegateError
from trainer.fit_options import HEADS, NORM_HEAD, PAPER_HEAD
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


class EmbeddingNormTerm(nn.Module):
    """``weight × ‖P·flatten(features) + b‖``: the length of SFace's raw embedding, scaled.

    ``P``, ``b`` are SFace's last Gemm and BatchNorm folded into one affine map
    (:func:`trainer.mobilefacenet.sface_projection`); they are buffers, never trained.
    Only the scalar ``weight`` trains.
    """

    def __init__(self) -> None:
        super().__init__()
        features = int(np.prod(FEATURE_SHAPE))
        self.register_buffer("projection", torch.zeros(128, features))
        self.register_buffer("offset", torch.zeros(128))
        self.weight = nn.Parameter(torch.zeros(()))

    def load(self, projection: torch.Tensor, offset: torch.Tensor) -> None:
        self.projection.copy_(projection)
        self.offset.copy_(offset)

    def norm(self, features: torch.Tensor) -> torch.Tensor:
        """The raw embedding's length per sample (features: N×1024×7×7 or flattened)."""
        embedding = torch.flatten(features, 1) @ self.projection.T + self.offset
        return torch.linalg.vector_norm(embedding, dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.weight * self.norm(features)


def check_head(head: str) -> None:
    if head not in HEADS:
        raise FacegateError(f"unknown quality head {head!r}; choose one of {', '.join(HEADS)}")


class QualityRegressor(nn.Module):
    """Normalised RGB crops → one quality score (trained on 0..100 pseudo-labels)."""

    def __init__(self, dropout: float = 0.5, head: str = PAPER_HEAD) -> None:
        super().__init__()
        check_head(head)
        features = int(np.prod(FEATURE_SHAPE))
        self.backbone = SFaceBackbone()
        self.head = nn.Sequential(nn.Flatten(), nn.PReLU(features), nn.Dropout(dropout), nn.Linear(features, 1))
        self.norm_term = EmbeddingNormTerm() if head == NORM_HEAD else None

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        features = self.backbone(normalised)
        score = self.head(features)[:, 0]
        return score if self.norm_term is None else score + self.norm_term(features)

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
        self.norm_term = model.norm_term

    def forward(self, features: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.flatten(self.bn(self.blocks(features)))
        norm_part = self.norm_term(x) if self.norm_term is not None else None
        x = self.prelu(x)
        if self.training:
            x = x * keep if keep is not None else self.dropout(x)
        score = self.linear(x)[:, 0]
        return score if norm_part is None else score + norm_part

    def embedding_norms(self, features: torch.Tensor) -> torch.Tensor:
        """SFace's raw embedding length for features at the cut (the norm head's input)."""
        if self.norm_term is None:
            raise FacegateError("this head has no embedding-norm term")
        return self.norm_term.norm(self.flatten(self.bn(self.blocks(features))))


def fit_norm_term(part: TrainablePart, norms: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Start the norm head at the labels' least-squares fit on the norm: ``label ≈ w‖e‖ + c``.

    ``w`` goes to the norm term, ``c`` to the paper head's bias, whose weights start at
    zero; the head then learns the residual (so ``FitOptions.init_bias_to_mean`` does not apply
    to this head). Returns (w, c).
    """
    design = np.stack([np.asarray(norms, np.float64), np.ones(len(norms))], axis=1)
    (weight, intercept), *_ = np.linalg.lstsq(design, np.asarray(labels, np.float64), rcond=None)
    with torch.no_grad():
        part.norm_term.weight.fill_(float(weight))
        nn.init.zeros_(part.linear.weight)
        part.linear.bias.fill_(float(intercept))
    return float(weight), float(intercept)


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
