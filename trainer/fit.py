"""``trainer fit``: train the quality regressor on pseudo-labels (SDD-FIQA recipe).

Backbone initialised from the recogniser's weights; Huber (SmoothL1, δ=1) loss on 0..100
labels; Adam with the reference learning rate, betas and weight decay; step schedule;
random horizontal flip. Checkpoints every epoch (resumable), fixed seeds, training
curves as PNG. Uses a GPU when there is one.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from engines.errors import DatasetError, ModelError
from engines.modelfiles import load_model
from trainer.labels_cli import read_labels
from trainer.mobilefacenet import load_sface_weights
from trainer.quality_model import QualityRegressor, crops_to_tensor
from trainer.sddfiqa import RegressorParams

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


@dataclass(frozen=True)
class FitOptions:
    """What is ours rather than the method's: batching, validation split, seeds, device."""

    batch_size: int = 32
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    recognizer: str = "sface-2021dec"
    init_bias_to_mean: bool = True  # the head starts at the mean label, not at 0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with a clear error for a missing or corrupt file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many kinds for damaged files
        raise ModelError(f"checkpoint {path} is corrupt or not a facegate checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ModelError(f"checkpoint {path} is not a facegate checkpoint (no model/epoch)")
    return state


def _read_crops(paths: list[str]) -> np.ndarray:
    crops = []
    for path in paths:
        image = cv2.imread(path)
        if image is None or image.shape[:2] != (112, 112):
            raise DatasetError(f"{path} is not an aligned 112×112 crop; run `trainer labels` on aligned crops")
        crops.append(image)
    return np.stack(crops)


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * fraction)) if n > 4 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _evaluate(model: nn.Module, crops: np.ndarray, labels: np.ndarray, device: torch.device, batch: int) -> float:
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            x = crops_to_tensor(crops[start : start + batch]).to(device)
            errors.append(torch.abs(model(x).cpu() - torch.from_numpy(labels[start : start + batch])).numpy())
    return float(np.concatenate(errors).mean()) if errors else float("nan")


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
    fig.savefig(target, dpi=110)
    plt.close(fig)


def fit(labels_csv: Path, out: Path, params: RegressorParams = RegressorParams(),  # noqa: B008
        options: FitOptions = FitOptions(), resume: bool = False, progress: bool = True) -> Path:
    """Train and return the path of the final checkpoint (``out/checkpoints/last.pt``)."""
    from tqdm import tqdm

    labelled = read_labels(labels_csv)
    if len(labelled) < 8:
        raise DatasetError(f"{labels_csv} has {len(labelled)} labelled images; training needs at least 8")
    paths = sorted(labelled)
    labels = np.array([labelled[p] for p in paths], np.float32)
    crops = _read_crops(paths)
    train_idx, val_idx = _split(len(paths), options.val_fraction, options.seed)
    device = torch.device("cuda" if options.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if options.device == "auto" else options.device))
    _seed_everything(options.seed)
    model = QualityRegressor(params.dropout)
    _, recognizer_onnx = load_model(options.recognizer)
    load_sface_weights(model.backbone, recognizer_onnx)
    if options.init_bias_to_mean:
        nn.init.zeros_(model.head[-1].weight)
        nn.init.constant_(model.head[-1].bias, float(labels[train_idx].mean()))
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate, betas=params.betas,
                                 weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, list(params.lr_milestones), params.lr_gamma)
    loss_fn = nn.SmoothL1Loss(beta=params.huber_delta)
    checkpoints = out / CHECKPOINT_DIR
    checkpoints.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    first_epoch = 1
    if resume and (checkpoints / LAST).is_file():
        state = load_checkpoint(checkpoints / LAST)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        first_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
    rng = np.random.default_rng([options.seed, first_epoch])
    for epoch in range(first_epoch, params.epochs + 1):
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        started = time.perf_counter()
        bar = tqdm(range(0, len(order), options.batch_size), desc=f"epoch {epoch}/{params.epochs}",
                   unit="batch", disable=not progress, leave=False)
        for start in bar:
            batch = order[start : start + options.batch_size]
            images = crops[batch]
            if params.horizontal_flip:
                flip = rng.random(len(batch)) < 0.5
                images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
            x = crops_to_tensor(images).to(device)
            y = torch.from_numpy(labels[batch]).to(device)
            loss = loss_fn(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses):.2f}")
        scheduler.step()
        val_mae = _evaluate(model, crops[val_idx], labels[val_idx], device, options.batch_size)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_mae": val_mae,
                        "seconds": round(time.perf_counter() - started, 2), "lr": scheduler.get_last_lr()[0]})
        if progress:
            print(f"epoch {epoch:>2}/{params.epochs}  loss {history[-1]['train_loss']:.3f}  "
                  f"val MAE {val_mae:.2f}  ({history[-1]['seconds']:.1f}s)", flush=True)
        state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimiser.state_dict(),
                 "scheduler": scheduler.state_dict(), "history": history, "torch_rng": torch.get_rng_state(),
                 "params": asdict(params), "options": asdict(options), "labels": str(labels_csv),
                 "train_images": len(train_idx), "val_images": len(val_idx)}
        # Per-epoch files keep the weights; last.pt also keeps what resuming needs.
        torch.save({k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "torch_rng")},
                   checkpoints / f"epoch_{epoch:03d}.pt")
        torch.save(state, checkpoints / LAST)
        plot_curves(history, out / "training_curves.png")
    (out / "fit.json").write_text(json.dumps({"params": asdict(params), "options": asdict(options),
                                              "history": history, "labels": str(labels_csv)}, indent=2))
    return checkpoints / LAST


def params_with(epochs: int | None) -> RegressorParams:
    return replace(RegressorParams(), epochs=epochs) if epochs else RegressorParams()
