"""The shipped model's claims follow from its own report's rows, and the manifest and README say the same.

Not a snapshot of numbers: each claim is recomputed here from the rows of the shipped
``report.json`` (a few lines, independently of ``trainer.evaluation.claims``) and compared
with what the report, the manifest and the README state.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.manifest import read_manifest
from engines.registry import current_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "engines" / "models"
ORACLE = "pseudo_labels"


@pytest.fixture(scope="module")
def shipped() -> tuple[dict, dict]:
    folder = SHIPPED / current_model("quality")
    return json.loads((folder / "report.json").read_text()), read_manifest(folder).evaluation or {}


def _rows(report: dict, data: str, recognizer: str) -> dict[str, float]:
    return {r["method"]: r["pauc_0.3"] for r in report["results"]
            if r["data"] == data and r["recognizer"] == recognizer and r["fmr"] == 1e-3}


def test_shipped_report_covers_the_three_heldout_sets_and_every_method(shipped):
    report, _ = shipped
    assert report["main"] == "pins/heldout"
    assert set(report["sets"]) == {"pins/heldout", "seed/heldout", "pins/heldout+degraded"}
    for data in report["sets"]:
        for recognizer in ("sface", "dlib-resnet"):
            methods = set(_rows(report, data, recognizer))
            assert {"random", "detector_score", "sharpness", "embedding_norm", "qualityface", ORACLE,
                    "model:" + report["model"], "model:sddfiqa-mfn@1"} <= methods, (data, recognizer)


def test_each_claim_follows_from_the_rows(shipped):
    report, _ = shipped
    claims, main, model = report["claims"], report["main"], "model:" + report["model"]
    verdicts = []
    for recognizer in ("sface", "dlib-resnet"):
        rows = _rows(report, main, recognizer)
        others = {m: v for m, v in rows.items() if m not in (model, ORACLE)}
        best = min(others, key=others.get)
        beats = all(rows[model] < v for v in others.values())
        assert claims["beats_every_method"][recognizer]["holds"] == beats
        assert claims["beats_every_method"][recognizer]["best_other"] == best
        difference = next(d for d in report["differences"]
                          if d["data"] == main and d["recognizer"] == recognizer and d["versus"] == best)
        assert difference["pauc_0.3"] == pytest.approx(rows[model] - rows[best], abs=2e-6)
        low, high = difference["ci"]
        assert low <= high
        assert claims["difference_excludes_zero"][recognizer]["holds"] == (high < 0)
        verdicts += [beats, high < 0]
    seed = claims["seed_no_worse"]
    if report["model"] == "sddfiqa-mfn@1":
        assert not seed["applicable"]
    else:
        for recognizer in ("sface", "dlib-resnet"):
            rows = _rows(report, "seed/heldout", recognizer)
            holds = rows[model] <= rows["model:sddfiqa-mfn@1"]
            assert seed["recognizers"][recognizer]["holds"] == holds
            verdicts.append(holds)
    kinds = report["degradation"]["kinds"]
    assert len(kinds) == 7
    for kind, entry in kinds.items():
        assert claims["degradation"]["kinds"][kind]["holds"] == (entry["spearman"] <= -0.8)
        verdicts.append(entry["spearman"] <= -0.8)
    assert claims["all_hold"] == all(verdicts)


def test_manifest_and_readme_state_what_the_report_shows(shipped):
    from trainer.evaluation import claims as ship
    from trainer.evaluation.report import results_table
    from trainer.evaluation.thresholds import markdown as thresholds_markdown

    report, evaluation = shipped
    assert evaluation["claims"] == report["claims"]
    assert evaluation["thresholds"] == report["thresholds"]
    readme = (ROOT / "README.md").read_text()
    assert ship.markdown(report["claims"]) in readme
    assert results_table(report, report["main"]) in readme
    assert thresholds_markdown(report["thresholds"]) in readme
