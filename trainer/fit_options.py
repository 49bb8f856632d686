"""``trainer fit``'s own options, apart from the method's recipe (kept free of torch for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

# Quality heads (trainer.quality_model): the paper's, and the paper's plus the embedding norm.
PAPER_HEAD, NORM_HEAD = "sddfiqa", "sddfiqa+norm"
HEADS = (PAPER_HEAD, NORM_HEAD)


@dataclass(frozen=True)
class FitOptions:
    """What is ours rather than the method's: batching, freezing, caching, seeds, devices.

    ``batch_size`` is the global batch: with N processes each trains on batch_size / N
    samples per step, so a run on any number of processes follows the same recipe.
    ``frozen_blocks`` 0 (default) trains the whole network, as the reference; see
    ``trainer.quality_model.NAMED_CUTS`` for the cut points worth caching.
    """

    batch_size: int = 32
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    recognizer: str = "sface-2021dec"
    init_bias_to_mean: bool = True  # the head starts at the mean label, not at 0
    frozen_blocks: int = 0
    head: str = PAPER_HEAD  # or NORM_HEAD: see trainer.quality_model
    feature_cache: bool = True  # with frozen blocks: cache their features (else run them every step)
    cache_dir: str | None = None  # default: $FACEGATE_CACHE/features
    cache_batch: int = 64
    cache_shard_images: int = 2048
    workers: int = 0  # DataLoader processes decoding images or reading cached features
    sync_batchnorm: bool = True  # several GPU processes: BatchNorm statistics over the global batch


# Options that change what training produces: part of a rebuild's fit key, and what must
# match for a checkpoint to be resumed (workers, devices and cache folders do not).
RESULT_FIELDS = ("batch_size", "val_fraction", "seed", "recognizer", "init_bias_to_mean", "frozen_blocks",
                 "feature_cache", "head")
