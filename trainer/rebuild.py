"""``trainer rebuild``: embeddings → labels → fit → export → build → evaluate → new version.

One command, resumable: every stage writes its result into a folder keyed by everything
that changes it (``trainer.rebuild_stages``), and is skipped when its result is already
there; each stage's wall time, CPU time and peak memory go to the work folder's
``summary.json`` and are printed at the end. The new ``engines/models/<name>-<N>/`` becomes current only if it beats
the current model on the same held-out pairs (mean pAUC at discard 0.3, FMR 1e-3, over
the recognisers), or with ``force``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import ModelError
from engines.paths import MODELS_DIR
from engines.registry import current_model, set_current
from trainer.fit_options import FitOptions
from trainer.rebuild_stages import EmbeddingOptions
from trainer.rebuild_stages import portable as _portable
from trainer.sddfiqa import LabelParams, RegressorParams

MODEL_NAME = "sddfiqa-mfn"
DECISION_FMR = 1e-3


@dataclass
class RebuildResult:
    version_dir: Path
    became_current: bool
    score: float
    current_score: float | None
    build_note: str
    stages: list[dict] = field(default_factory=list)  # wall time, CPU time, peak memory per stage
    summary: Path | None = None


def decision_score(report: dict) -> float:
    """Mean pAUC (discard ≤ 0.3) at FMR 1e-3 of the model over the recognisers (lower is better)."""
    rows = [r for r in report["results"] if r["method"].startswith("model:") and r["fmr"] == DECISION_FMR]
    return float(sum(r["pauc_0.3"] for r in rows) / len(rows))


def _next_version(models_dir: Path) -> int:
    numbers = [int(p.name.rsplit("-", 1)[1]) for p in models_dir.glob(f"{MODEL_NAME}-*")
               if p.name.rsplit("-", 1)[1].isdigit()]
    return max(numbers, default=0) + 1


def rebuild(train: Path | Sequence[Path], heldout: Path, labels: LabelParams = LabelParams(),  # noqa: B008
            fit_params: RegressorParams = RegressorParams(), force: bool = False,  # noqa: B008
            models_dir: Path = MODELS_DIR, progress: bool = True,
            recognizers: tuple[str, ...] = ("sface", "dlib-resnet"),
            fit_options: FitOptions | None = None, embedding: EmbeddingOptions | None = None,
            ) -> RebuildResult:
    """Stages 1–5 (see ``trainer.rebuild_stages`` for 1–4); ``train`` is one dataset root or several."""
    from trainer.evaluate import evaluate
    from trainer.rebuild_stages import RebuildStages

    roots = [Path(train)] if isinstance(train, str | Path) else [Path(r) for r in train]
    stages = RebuildStages(roots, heldout, labels, fit_params, fit_options or FitOptions(),
                           embedding or EmbeddingOptions(), progress)
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
    report = evaluate(heldout, staging / "report.json", model=str(staging), recognizers=recognizers)
    score = decision_score(report)
    current_score = None
    try:
        current = current_model("quality", models_dir)
    except ModelError:
        current = None
    if current:
        current_report = evaluate(heldout, work / "current_report.json", model=str(models_dir / current),
                                  recognizers=recognizers)
        current_score = decision_score(current_report)
    better = current_score is None or score < current_score
    from engines.manifest import read_manifest, write_manifest

    manifest = read_manifest(staging)
    evaluation = {"data": _portable(heldout), "pairs": report["pairs"], "decision_score": round(score, 6),
                  "degradation_response": report["degradation_response"],
                  "pauc_0.3_fmr1e-3": {r["recognizer"] + "/" + r["method"]: r["pauc_0.3"]
                                       for r in report["results"] if r["fmr"] == DECISION_FMR}}
    write_manifest(staging, manifest.model_copy(update={"evaluation": evaluation}))
    for extra in (stages.fit_dir / "training_curves.png", labels_dir / "histogram.png"):
        if extra.is_file():
            shutil.copy(extra, staging / ("labels_histogram.png" if extra.name == "histogram.png" else extra.name))
    target = models_dir / f"{MODEL_NAME}-{version}"
    shutil.copytree(staging, target)
    # Recorded paths are made relative to the model folder's own files where they point into it.
    data = json.loads((target / "report.json").read_text())
    data["model"] = f"{MODEL_NAME}@{version}"
    data["data"] = _portable(heldout)
    (target / "report.json").write_text(json.dumps(data, indent=1) + "\n")
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
