"""``trainer rebuild``: embeddings → labels → fit → export → build → evaluate → new version.

One command, resumable: every stage writes its result into a folder keyed by everything
that changes it (``trainer.rebuild_stages``), and is skipped when its result is already
there; each stage's wall time, CPU time and peak memory go to the work folder's
``summary.json`` and are printed at the end. The new ``engines/models/<name>-<N>/`` becomes current only if it beats
the current model on the same held-out pairs (mean pAUC at discard 0.3, FMR 1e-3, over
the recognisers), or with ``force``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engines.paths import MODELS_DIR
from engines.registry import set_current
from trainer.datasets.degraded import DegradeOptions
from trainer.fit_options import FitOptions
from trainer.rebuild_stages import EmbeddingOptions
from trainer.rebuild_stages import portable as _portable
from trainer.sddfiqa import LabelParams, RegressorParams

MODEL_NAME = "sddfiqa-mfn"


@dataclass
class RebuildResult:
    version_dir: Path
    became_current: bool
    score: float
    current_score: float | None
    build_note: str
    stages: list[dict] = field(default_factory=list)  # wall time, CPU time, peak memory per stage
    summary: Path | None = None




def _next_version(models_dir: Path) -> int:
    numbers = [int(p.name.rsplit("-", 1)[1]) for p in models_dir.glob(f"{MODEL_NAME}-*")
               if p.name.rsplit("-", 1)[1].isdigit()]
    return max(numbers, default=0) + 1


def rebuild(train: Path | Sequence[Path], heldout: Path, labels: LabelParams = LabelParams(),  # noqa: B008
            fit_params: RegressorParams = RegressorParams(), force: bool = False,  # noqa: B008
            models_dir: Path = MODELS_DIR, progress: bool = True,
            recognizers: tuple[str, ...] = ("sface", "dlib-resnet"),
            fit_options: FitOptions | None = None, embedding: EmbeddingOptions | None = None,
            degrade: DegradeOptions | None = None) -> RebuildResult:
    """Stages 1–5 (see ``trainer.rebuild_stages`` for 1–4); ``train`` is one dataset root or several;
    ``degrade``: one degraded copy of a fraction of the training images, in their identities."""
    from trainer.rebuild_stages import RebuildStages

    roots = [Path(train)] if isinstance(train, str | Path) else [Path(r) for r in train]
    stages = RebuildStages(roots, heldout, labels, fit_params, fit_options or FitOptions(),
                           embedding or EmbeddingOptions(), progress, degrade)
    work = stages.work
    say = stages.say
    labels_dir = stages.labels()
    last = stages.fit()
    version = _next_version(models_dir)
    staging = work / "model"
    stages.export(last, staging, MODEL_NAME, version)
    build_note = stages.build(staging)

    evaluation_record = stages.log.begin("evaluate")
    say("[5/5] evaluate on held-out identities")
    from trainer.evaluation.promotion import evaluate_candidate

    verdict = evaluate_candidate(staging, heldout, models_dir, recognizers, progress, _portable(heldout))
    score, current_score, better = verdict.score, verdict.current_score, verdict.better
    for extra in (stages.fit_dir / "training_curves.png", labels_dir / "histogram.png"):
        if extra.is_file():
            shutil.copy(extra, staging / ("labels_histogram.png" if extra.name == "histogram.png" else extra.name))
    target = models_dir / f"{MODEL_NAME}-{version}"
    shutil.copytree(staging, target)
    became = better or force
    if became:
        set_current("quality", target.name, models_dir)
    stages.log.end(evaluation_record)
    stages.write_summary({"model": target.name, "became_current": became, "score": score,
                          "current_score": current_score})
    if progress:
        print(stages.log.table(), flush=True)
        print(f"stage times and peak memory: {work / 'summary.json'}", flush=True)
    return RebuildResult(target, became, score, current_score, build_note, stages.log.as_json(),
                         work / "summary.json")
