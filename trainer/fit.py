"""``trainer fit``: train the quality regressor on pseudo-labels (SDD-FIQA recipe).

Backbone initialised from the recogniser's weights; Huber (SmoothL1, δ=1) loss on 0..100
labels; Adam with the reference learning rate, betas and weight decay; step schedule;
random horizontal flip. The reference trains the whole network; ``frozen_blocks`` K > 0
freezes the first K conv blocks (eval mode, BN statistics fixed) and, by default, caches
their features once per image and orientation (``trainer.feature_cache``), which is what
makes a rebuild fit a CPU's budget.

One process or many: under ``torchrun`` every process trains a share of each global
batch through DistributedDataParallel (gloo on CPUs, NCCL on GPUs); rank 0 writes the
checkpoints (atomically, every epoch) and the logs. A world of one runs the same code.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from engines.errors import DatasetError, FacegateError
from engines.modelfiles import load_model
from engines.paths import cache_root
from trainer.checkpoints import load_checkpoint, save_atomically, write_json_atomically
from trainer.distributed import World, barrier, end_world, start_world, sum_across
from trainer.fit_data import CachedSamples, CropSamples, LabelledImages, SampleRandomness, open_labelled_images
from trainer.fit_options import PAPER_HEAD, RESULT_FIELDS, FitOptions
from trainer.mobilefacenet import FEATURE_SHAPE, load_sface_weights, sface_projection
from trainer.quality_model import QualityRegressor, TrainablePart, check_cut, fit_norm_term, freeze
from trainer.sddfiqa import RegressorParams

__all__ = ["CHECKPOINT_DIR", "LAST", "FitOptions", "cache_features", "fit", "load_checkpoint", "params_with",
           "plot_curves"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
NORM_FIT_IMAGES = 4096  # images the norm head's starting fit uses: enough for two numbers


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * fraction)) if n > 4 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def plot_curves(history: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train Huber loss")
    ax.plot(epochs, [h["val_mae"] for h in history], label="validation MAE (0..100)")
    ax.set(xlabel="epoch", title="quality regressor training")
    ax.legend()
    fig.tight_layout()
    tmp = target.with_name(target.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(target)


def fit(labels_csv: Path, out: Path, params: RegressorParams | None = None, options: FitOptions | None = None,
        resume: bool = False, progress: bool = True) -> Path:
    """Train and return the path of the final checkpoint (``out/checkpoints/last.pt``).

    Under ``torchrun`` call it in every process; it joins the process group and leaves it.
    """
    params, options = params or RegressorParams(), options or FitOptions()
    world = start_world(options.device)
    try:
        return _fit(world, Path(labels_csv), Path(out), params, options, resume, progress and world.is_main)
    finally:
        end_world(world)


def _initial_model(params: RegressorParams, options: FitOptions, mean_label: float) -> tuple[QualityRegressor, Path]:
    """The regressor as training starts: SFace's weights, the head at the mean label, blocks frozen."""
    torch.manual_seed(options.seed)
    model = QualityRegressor(params.dropout, options.head)
    _, recognizer_onnx = load_model(options.recognizer)
    load_sface_weights(model.backbone, recognizer_onnx)
    if model.norm_term is not None:
        model.norm_term.load(*sface_projection(recognizer_onnx))
    if options.init_bias_to_mean:
        nn.init.zeros_(model.head[-1].weight)
        nn.init.constant_(model.head[-1].bias, mean_label)
    freeze(model, options.frozen_blocks)
    return model, recognizer_onnx


def _feature_rows(model: QualityRegressor, recognizer_onnx: Path, images: LabelledImages, options: FitOptions,
                  world: World, progress: bool):
    """The cached features of ``images`` at the cut (built where missing) and what building took."""
    from engines.paths import sha256_file
    from trainer.feature_cache import FeatureStore, FrontRunner, build_cache, content_keys

    root = Path(options.cache_dir) if options.cache_dir else cache_root() / "features"
    init_id = f"{options.recognizer}-{sha256_file(recognizer_onnx)[:12]}"
    store = FeatureStore(root, init_id, options.frozen_blocks)
    keys = content_keys(images, progress)
    report = build_cache(images, keys, store, FrontRunner(model, options.frozen_blocks, world), world,
                         options.cache_batch, options.cache_shard_images, progress)
    return store.rows(keys), report


def cache_features(labels_csv: Path, params: RegressorParams | None = None, options: FitOptions | None = None,
                   progress: bool = True):
    """Build the feature cache that :func:`fit` with these options reads; None when nothing is cached.

    ``trainer rebuild`` runs it as a stage of its own, so its time and memory are reported
    apart from training's.
    """
    params, options = params or RegressorParams(), options or FitOptions()
    check_cut(options.frozen_blocks)
    if not options.frozen_blocks or not options.feature_cache:
        return None
    world = start_world(options.device)
    try:
        images = open_labelled_images(Path(labels_csv))
        model, recognizer_onnx = _initial_model(params, options, float(images.labels.mean()))
        model.to(world.device)
        return _feature_rows(model, recognizer_onnx, images, options, world, progress and world.is_main)[1]
    finally:
        end_world(world)


class _Run:
    """The model, its trainable part, and how a batch reaches it (cached features or images)."""

    def __init__(self, world: World, images: LabelledImages, params: RegressorParams, options: FitOptions,
                 train_idx: np.ndarray, progress: bool, resuming: bool = False) -> None:
        self.world, self.options = world, options
        self.labels = torch.from_numpy(images.labels)
        self.cut = options.frozen_blocks
        model, recognizer_onnx = _initial_model(params, options, float(images.labels[train_idx].mean()))
        self.model = model.to(world.device)
        self.cache_report = None
        randomness = SampleRandomness(options.seed, params.horizontal_flip, params.dropout,
                                      int(np.prod(FEATURE_SHAPE)))
        self.cached = self.cut > 0 and options.feature_cache
        if self.cached:
            rows, self.cache_report = _feature_rows(self.model, recognizer_onnx, images, options, world, progress)
            self.train_set, self.val_set = CachedSamples(rows, randomness), CachedSamples(rows, None)
        else:
            self.train_set, self.val_set = CropSamples(images, randomness), CropSamples(images, None)
        part = TrainablePart(self.model, self.cut)
        if world.distributed and world.device.type == "cuda" and options.sync_batchnorm:
            part = nn.SyncBatchNorm.convert_sync_batchnorm(part)
        self.part = part.to(world.device)
        if self.part.norm_term is not None and not resuming:  # a resumed run loads its own start
            self._start_norm_term(images, train_idx, progress)
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            if self.part.norm_term is not None:  # constants, equal everywhere: not broadcast every step
                DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    self.part, [f"norm_term.{name}" for name, _ in self.part.norm_term.named_buffers()])
            ids = [world.device.index] if world.device.type == "cuda" else None
            self.net: nn.Module = DistributedDataParallel(self.part, device_ids=ids)
        else:
            self.net = self.part

    def _start_norm_term(self, images: LabelledImages, train_idx: np.ndarray, progress: bool) -> None:
        """The norm head's start: least squares of the labels on the embedding norm, over up
        to ``NORM_FIT_IMAGES`` training images (unflipped), the same draw in every process."""
        rng = np.random.default_rng(self.options.seed)
        chosen = np.sort(rng.choice(train_idx, min(len(train_idx), NORM_FIT_IMAGES), replace=False))
        loader = DataLoader(Subset(self.val_set, chosen.tolist()), batch_size=self.options.cache_batch,
                            shuffle=False, num_workers=self.options.workers)
        norms = []
        self.part.eval()  # BatchNorm layers that train (cuts below 27): stored statistics, left unchanged
        with torch.no_grad():
            for _, x, _ in loader:
                norms.append(self.part.embedding_norms(self.inputs(x)).float().cpu().numpy())
        weight, intercept = fit_norm_term(self.part, np.concatenate(norms), images.labels[chosen])
        if progress:
            print(f"norm head starts at label ≈ {weight:.3f} × ‖e‖ {intercept:+.2f} ({len(chosen)} images)",
                  flush=True)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the trainable part takes it: features at the cut."""
        x = x.to(self.world.device, non_blocking=True)
        if self.cut and not self.cached:
            with torch.no_grad():
                x = self.model.front(x, self.cut)
        return x


def _check_resumable(state: dict, params: RegressorParams, options: FitOptions, out: Path) -> None:
    """Refuse to continue a run made with a different recipe (only ``epochs`` may grow)."""
    def plain(data: dict) -> dict:
        return json.loads(json.dumps(data))

    before_options, now_options = plain(state.get("options") or {}), plain(asdict(options))
    before_options.setdefault("head", PAPER_HEAD)  # checkpoints from before heads had kinds
    before_params, now_params = plain(state.get("params") or {}), plain(asdict(params))
    changed = [k for k in RESULT_FIELDS if k in before_options and before_options[k] != now_options[k]]
    changed += [k for k in now_params if k != "epochs" and k in before_params and before_params[k] != now_params[k]]
    if changed:
        raise FacegateError(f"{out} holds a run made with different {', '.join(sorted(changed))}; resume it with "
                            "the same options or train into a new --out")


def _validate(run: _Run, val_idx: np.ndarray, local_batch: int) -> float:
    """Mean absolute error (0..100 scale) over the validation images, shared out over processes."""
    run.part.eval()
    mine = val_idx[run.world.rank :: run.world.size]
    loader = DataLoader(Subset(run.val_set, mine.tolist()), batch_size=local_batch, shuffle=False,
                        num_workers=run.options.workers)
    total, count = 0.0, 0
    with torch.no_grad():
        for index, x, _ in loader:
            predicted = run.part(run.inputs(x)).float().cpu()
            total += float(torch.abs(predicted - run.labels[index]).sum())
            count += len(index)
    total, count = sum_across(run.world, [total, count])
    return total / count if count else float("nan")


def _fit(world: World, labels_csv: Path, out: Path, params: RegressorParams, options: FitOptions, resume: bool,
         progress: bool) -> Path:
    from tqdm import tqdm

    check_cut(options.frozen_blocks)
    if options.batch_size % world.size:
        raise FacegateError(f"the global batch of {options.batch_size} does not split evenly over {world.size} "
                            "processes")
    images = open_labelled_images(labels_csv)
    if len(images) < 8:
        raise DatasetError(f"{labels_csv} has {len(images)} labelled images; training needs at least 8")
    train_idx, val_idx = _split(len(images), options.val_fraction, options.seed)
    checkpoints = out / CHECKPOINT_DIR
    state = load_checkpoint(checkpoints / LAST) if resume and (checkpoints / LAST).is_file() else None
    if state is not None:
        _check_resumable(state, params, options, out)  # before any work is spent on a run that cannot go on
    run = _Run(world, images, params, options, train_idx, progress, resuming=state is not None)
    optimiser = torch.optim.Adam([p for p in run.part.parameters() if p.requires_grad], lr=params.learning_rate,
                                 betas=params.betas, weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, list(params.lr_milestones), params.lr_gamma)
    loss_fn = nn.SmoothL1Loss(beta=params.huber_delta)
    history: list[dict] = []
    first_epoch = 1
    if state is not None:
        run.model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        first_epoch = state["epoch"] + 1
        if progress:
            print(f"resuming after epoch {state['epoch']} from {checkpoints / LAST}", flush=True)
    local_batch = options.batch_size // world.size
    train_set = Subset(run.train_set, train_idx.tolist())
    sampler = DistributedSampler(train_set, num_replicas=world.size, rank=world.rank, shuffle=True,
                                 seed=options.seed, drop_last=False)
    loader = DataLoader(train_set, batch_size=local_batch, sampler=sampler, num_workers=options.workers,
                        pin_memory=world.device.type == "cuda")
    for epoch in range(first_epoch, params.epochs + 1):
        sampler.set_epoch(epoch)
        run.train_set.start_epoch(epoch)
        run.part.train()
        started = time.perf_counter()
        loss_sum, seen = 0.0, 0
        with tqdm(total=len(sampler) * world.size, desc=f"epoch {epoch}/{params.epochs}", unit="img",
                  disable=not progress, leave=False) as bar:
            for index, x, keep in loader:
                predicted = run.net(run.inputs(x), keep.to(world.device, non_blocking=True))
                loss = loss_fn(predicted, run.labels[index].to(world.device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                loss_sum += float(loss.detach()) * len(index)
                seen += len(index)
                bar.update(len(index) * world.size)
                bar.set_postfix(loss=f"{loss_sum / seen:.2f}")
        scheduler.step()
        loss_sum, seen = sum_across(world, [loss_sum, seen])
        val_mae = _validate(run, val_idx, local_batch)
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_mae": val_mae,
                        "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 1),
                        "lr": scheduler.get_last_lr()[0]})
        if world.is_main:
            _save_epoch(run, optimiser, scheduler, history, params, options, labels_csv, checkpoints,
                        len(train_idx), len(val_idx))
            plot_curves(history, out / "training_curves.png")
            if progress:
                print(f"epoch {epoch:>2}/{params.epochs}  loss {history[-1]['train_loss']:.3f}  "
                      f"val MAE {val_mae:.2f}  ({seconds:.1f}s, {history[-1]['images_per_s']:.0f} img/s)",
                      flush=True)
        barrier(world)
    if world.is_main:
        write_json_atomically({"params": asdict(params), "options": asdict(options), "history": history,
                               "labels": str(labels_csv), "world_size": world.size,
                               "feature_cache": asdict(run.cache_report) if run.cache_report else None},
                              out / "fit.json")
    barrier(world)
    return checkpoints / LAST


def _save_epoch(run: _Run, optimiser, scheduler, history: list[dict], params: RegressorParams, options: FitOptions,
                labels_csv: Path, checkpoints: Path, train_images: int, val_images: int) -> None:
    """Per-epoch weights, and ``last.pt`` with what resuming needs; each written atomically."""
    state = {"epoch": history[-1]["epoch"], "model": {k: v.cpu() for k, v in run.model.state_dict().items()},
             "history": history, "params": asdict(params), "options": asdict(options), "labels": str(labels_csv),
             "train_images": train_images, "val_images": val_images, "world_size": run.world.size}
    # last.pt first: an epoch's own file then exists only once resuming can start after it.
    save_atomically({**state, "optimizer": optimiser.state_dict(), "scheduler": scheduler.state_dict()},
                    checkpoints / LAST)
    save_atomically(state, checkpoints / f"epoch_{state['epoch']:03d}.pt")


def params_with(epochs: int | None) -> RegressorParams:
    return replace(RegressorParams(), epochs=epochs) if epochs else RegressorParams()


def fit_report(out: Path) -> dict:
    """``fit.json`` of a finished run (history, options, feature cache figures)."""
    return json.loads((Path(out) / "fit.json").read_text())
