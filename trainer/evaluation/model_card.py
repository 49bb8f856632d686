"""What a model folder records about its evaluation, and the rule that promotes a rebuild.

``manifest.json`` → ``evaluation``: the main held-out set, its pairs, the model's pAUC (u ≤ 0.3,
FMR 1e-3) beside every other method's, the decision score, the degradation response, the
threshold table (a contract: the gate reads it) and the ship criteria (``claims``). The full
report (every set, FMR, curve and interval) is ``report.json`` beside it.
"""

from __future__ import annotations

from pathlib import Path

from trainer.erc import DECISION_FMR
from trainer.evaluation.methods import MODEL_PREFIX


def decision_score(report: dict, tag: str | None = None) -> float:
    """Mean pAUC (u ≤ 0.3, FMR 1e-3) over the recognisers of a model on the main set (lower is better).

    ``tag``: which model (``name@version``) of the report; default the report's own model. A rebuild
    compares the candidate's with the current model's from the same report, on the same pairs.
    """
    method = MODEL_PREFIX + (tag or report["model"])
    rows = [r for r in report["results"] if r["method"] == method and r["fmr"] == DECISION_FMR
            and r.get("data", report.get("main")) == report.get("main", r.get("data"))]
    if not rows:
        raise KeyError(f"{method} is not in the report's main-set results")
    return float(sum(r["pauc_0.3"] for r in rows) / len(rows))


def evaluation_block(report: dict, data_label: str | None = None) -> dict:
    """The manifest's ``evaluation`` block for the report's model."""
    main = report["main"]
    return {
        "data": data_label or main,
        "sets": list(report["sets"]),
        "pairs": report["sets"][main]["pairs"],
        "decision_score": round(decision_score(report), 6),
        "degradation_response": report.get("degradation_response", {}),
        "pauc_0.3_fmr1e-3": {f"{r['recognizer']}/{r['method']}": r["pauc_0.3"] for r in report["results"]
                             if r["data"] == main and r["fmr"] == DECISION_FMR},
        "thresholds": report["thresholds"],
        "claims": report["claims"],
    }


def write_evaluation(model: str | None, report: dict) -> Path:
    """Write the evaluation block into a model folder's manifest; return the folder."""
    from engines.manifest import read_manifest, write_manifest
    from engines.modelfiles import model_dir
    from engines.registry import current_model

    folder = model_dir(model or current_model("quality"))
    manifest = read_manifest(folder)
    if manifest.tag != report["model"]:
        raise ValueError(f"report is about {report['model']}, the folder {folder} holds {manifest.tag}")
    write_manifest(folder, manifest.model_copy(update={"evaluation": evaluation_block(report)}))
    return folder
