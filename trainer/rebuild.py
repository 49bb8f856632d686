"""``trainer rebuild``: embeddings → labels → fit → export → build → evaluate → new version.

One command, resumable: every stage writes its result into a work folder keyed by the
training data's identity and the run's parameters, and is skipped when its result is
already there. The new ``engines/models/<name>-<N>/`` becomes current only if it beats
the current model on the same held-out pairs (mean pAUC at discard 0.3, FMR 1e-3, over
the recognisers), or with ``force``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from engines.errors import FacegateError
from engines.paths import MODELS_DIR, cache_root
from engines.registry import set_current
from trainer.sddfiqa import LabelParams, RegressorParams

MODEL_NAME = "sddfiqa-mfn"


@dataclass
class RebuildResult:
    version_dir: Path
    became_current: bool
    score: float
    current_score: float | None
    build_note: str


def _portable(path: Path) -> str:
    """A path as it reads on any machine: relative to the cache root when inside it."""
    try:
        return "$FACEGATE_CACHE/" + str(Path(path).resolve().relative_to(cache_root().resolve()))
    except ValueError:
        return str(path)


def _next_version(models_dir: Path) -> int:
    numbers = [int(p.name.rsplit("-", 1)[1]) for p in models_dir.glob(f"{MODEL_NAME}-*")
               if p.name.rsplit("-", 1)[1].isdigit()]
    return max(numbers, default=0) + 1


def _run_key(train: Path, heldout: Path, labels: LabelParams, fit: RegressorParams) -> str:
    files = sorted(str(p.relative_to(train)) + str(p.stat().st_size) for p in train.rglob("*") if p.is_file())
    blob = json.dumps([files, str(heldout), asdict(labels), asdict(fit)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def rebuild(train: Path, heldout: Path, labels: LabelParams = LabelParams(),  # noqa: B008
            fit_params: RegressorParams = RegressorParams(), force: bool = False,  # noqa: B008
            models_dir: Path = MODELS_DIR, progress: bool = True,
            recognizers: tuple[str, ...] = ("sface", "dlib-resnet"),
            ) -> RebuildResult:
    import argparse

    import numpy as np

    from trainer.export import export_onnx
    from trainer.fit import LAST, fit, load_checkpoint
    from trainer.labels_cli import run as run_labels

    work = cache_root() / "rebuild" / _run_key(train, heldout, labels, fit_params)
    work.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)

    labels_csv = work / "labels" / "labels.csv"
    if not labels_csv.is_file():
        say("[1/5] embeddings and pseudo-labels")
        run_labels(argparse.Namespace(
            data=train, embeddings=None, identities=None, out=work / "labels", cache=None, quiet=not progress,
            positives=labels.positives, negatives=labels.negatives, repetitions=labels.repetitions,
            seed=labels.seed, negatives_shared_by=labels.negatives_shared_by, sign_guard=labels.sign_guard,
            clip_percentile=labels.clip_percentile, implementation="fast"))
    else:
        say("[1/5] pseudo-labels: reused")

    last = work / "fit" / "checkpoints" / LAST
    done = last.is_file() and load_checkpoint(last)["epoch"] >= fit_params.epochs
    say(f"[2/5] fit ({fit_params.epochs} epochs){': reused' if done else ''}")
    if not done:
        fit(labels_csv, work / "fit", fit_params, resume=True, progress=progress)

    version = _next_version(models_dir)
    staging = work / "model"
    shutil.rmtree(staging, ignore_errors=True)
    say(f"[3/5] export {MODEL_NAME}-{version}")
    summary = json.loads((work / "labels" / "summary.json").read_text())
    training = {"data": _portable(train), "images_labelled": summary["labelled"], "identities": summary["identities"],
                "label_params": summary["params"], "fit_params": asdict(fit_params),
                "history": json.loads((work / "fit" / "fit.json").read_text())["history"][-1]}
    export_onnx(last, staging, MODEL_NAME, str(version), training=training)

    say("[4/5] TensorRT build")
    from engines.build import build_unavailable_reason

    build_note = build_unavailable_reason() or ""
    if not build_note:
        from trainer.build import build_model

        try:
            build_model(str(staging))
        except FacegateError as exc:
            build_note = str(exc)
    say(f"      skipped: {build_note}" if build_note else "      built")

    say("[5/5] evaluate on held-out identities")
    from trainer.evaluation.promotion import evaluate_candidate

    verdict = evaluate_candidate(staging, heldout, models_dir, recognizers, progress, _portable(heldout))
    score, current_score, better = verdict.score, verdict.current_score, verdict.better
    for extra in (work / "fit" / "training_curves.png", work / "labels" / "histogram.png"):
        if extra.is_file():
            shutil.copy(extra, staging / ("labels_histogram.png" if extra.name == "histogram.png" else extra.name))
    target = models_dir / f"{MODEL_NAME}-{version}"
    shutil.copytree(staging, target)
    became = better or force
    if became:
        set_current("quality", target.name, models_dir)
    del np
    return RebuildResult(target, became, score, current_score, build_note)
