"""Step 5 of ``trainer rebuild``: evaluate the new model and decide whether it becomes current.

The candidate is evaluated once, with the current model (and ``sddfiqa-mfn-1``) as methods on
the same pairs, so both scores come from one report. The rule: the candidate becomes current
when its decision score (mean pAUC u ≤ 0.3 at FMR 1e-3 over the recognisers, on the main
held-out set given to the rebuild) is lower than the current model's. When the main set is not
the seed set (e.g. ``pins/heldout``), the seed held-out set and a degraded copy of the main set
are evaluated too, for the model card and the ship criteria; they do not enter the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.errors import ModelError
from engines.manifest import read_manifest, write_manifest
from engines.paths import cache_root
from engines.registry import current_model
from trainer.evaluation.methods import REFERENCE_MODEL
from trainer.evaluation.model_card import decision_score, evaluation_block


@dataclass
class Promotion:
    report: dict
    score: float
    current_score: float | None

    @property
    def better(self) -> bool:
        return self.current_score is None or self.score < self.current_score


def companion_sets(heldout: Path, cache: Path | None = None) -> tuple:
    """Sets evaluated beside a main held-out folder: none for the seed set, else the seed set and
    the main set's degraded copy."""
    from trainer.evaluation.heldout import degraded_copy, open_folder

    seed_root = (cache or cache_root()) / "seed"
    if Path(heldout).resolve().is_relative_to(seed_root.resolve()):
        return ()
    return ("seed", degraded_copy(open_folder(Path(heldout)), cache))


def evaluate_candidate(candidate: Path, heldout: Path, models_dir: Path, recognizers: tuple[str, ...],
                       progress: bool = True, data_label: str | None = None, replicates: int | None = None,
                       degradation: bool = True) -> Promotion:
    """Write ``candidate/report.json`` (+ figures) and its manifest's evaluation block; return the verdict."""
    from trainer.evaluate import evaluate
    from trainer.evaluation.bootstrap import REPLICATES

    try:
        current = current_model("quality", models_dir)
    except ModelError:
        current = None
    compare = [REFERENCE_MODEL] + ([str(models_dir / current)] if current else [])
    report = evaluate(heldout, candidate / "report.json", model=str(candidate), recognizers=recognizers,
                      progress=progress, also=companion_sets(heldout), compare=tuple(compare),
                      replicates=REPLICATES if replicates is None else replicates, degradation=degradation)
    score = decision_score(report)
    current_score = None
    if current:
        current_manifest = read_manifest(models_dir / current)
        if current_manifest.tag in report["compared_models"]:
            current_score = decision_score(report, current_manifest.tag)
        elif current_manifest.sha256 == read_manifest(candidate).sha256:
            current_score = score  # the same weights: not better
    manifest = read_manifest(candidate)
    write_manifest(candidate, manifest.model_copy(update={"evaluation": evaluation_block(report, data_label)}))
    return Promotion(report, score, current_score)
