"""The ship criteria of issue #11, computed from a report's own rows.

For the report's model (``report["model"]``), at FMR 1e-3, area up to discard 0.3:

1. ``beats_every_method``: on the main held-out set, for each recogniser, its pAUC is below
   every other method's (the heuristics, the embedding norm, qualityface, the other quality
   models such as ``sddfiqa-mfn-1``); the oracle (the held-out set's own pseudo-labels) is
   not a method a user could pick and is left out;
2. ``difference_excludes_zero``: the 95% bootstrap interval (over identities) of model −
   best other method lies below zero;
3. ``seed_no_worse``: on the seed held-out set, its pAUC is at most ``sddfiqa-mfn-1``'s, per
   recogniser (not applicable when the model *is* ``sddfiqa-mfn-1``);
4. ``degradation``: on the main set's ladder, the mean Spearman of step vs score is ≤ −0.8
   for every kind.

Each claim records the figures it was decided on, so a reader (and ``tests/test_claims.py``)
can check it against the rows.
"""

from __future__ import annotations

from trainer.erc import DECISION_FMR
from trainer.evaluation.methods import MODEL_PREFIX, ORACLE

AREA = "pauc_0.3"
SEED_SET = "seed/heldout"
REFERENCE_TAG = "sddfiqa-mfn@1"


def _rows(report: dict, data: str, recognizer: str) -> dict[str, dict]:
    return {r["method"]: r for r in report["results"]
            if r["data"] == data and r["recognizer"] == recognizer and r["fmr"] == DECISION_FMR}


def best_other(rows: dict[str, dict], model_method: str) -> str:
    """The method with the lowest area among those a user could pick instead of the model."""
    others = {m: r[AREA] for m, r in rows.items() if m not in (model_method, ORACLE)}
    return min(others, key=others.get)


def ship_claims(report: dict) -> dict:
    """The ``claims`` block of a report (see the module docstring)."""
    model_method = MODEL_PREFIX + report["model"]
    main = report["main"]
    recognizers = list(dict.fromkeys(r["recognizer"] for r in report["results"] if r["data"] == main))
    claims: dict = {"model": report["model"], "data": main, "fmr": DECISION_FMR, "area": AREA}

    beats, excludes = {}, {}
    for recognizer in recognizers:
        rows = _rows(report, main, recognizer)
        rival = best_other(rows, model_method)
        beats[recognizer] = {"model": rows[model_method][AREA], "best_other": rival,
                             "best_other_value": rows[rival][AREA],
                             "holds": bool(rows[model_method][AREA] < rows[rival][AREA])}
        difference = next((d for d in report.get("differences", []) if d["data"] == main and
                           d["recognizer"] == recognizer and d["fmr"] == DECISION_FMR and d["versus"] == rival), None)
        excludes[recognizer] = {"versus": rival, "difference": difference and difference[AREA],
                                "ci": difference and difference["ci"],
                                "holds": bool(difference is not None and difference["ci"][1] < 0)}
    claims["beats_every_method"] = beats
    claims["difference_excludes_zero"] = excludes

    if report["model"] == REFERENCE_TAG:
        claims["seed_no_worse"] = {"applicable": False, "why": f"the model is {REFERENCE_TAG} itself"}
    elif not any(r["data"] == SEED_SET for r in report["results"]):
        claims["seed_no_worse"] = {"applicable": False, "why": "the seed held-out set was not evaluated"}
    else:
        seed = {}
        for recognizer in recognizers:
            rows = _rows(report, SEED_SET, recognizer)
            reference = rows.get(MODEL_PREFIX + REFERENCE_TAG)
            seed[recognizer] = {"model": rows[model_method][AREA], "reference": reference and reference[AREA],
                                "holds": bool(reference is not None and rows[model_method][AREA] <= reference[AREA])}
        claims["seed_no_worse"] = {"applicable": True, "reference": REFERENCE_TAG, "recognizers": seed}

    kinds = report.get("degradation", {}).get("kinds", {})
    criterion = report.get("degradation", {}).get("criterion", -0.8)
    claims["degradation"] = {"data": report.get("degradation", {}).get("data"), "criterion": criterion,
                             "kinds": {k: {"spearman": v["spearman"], "holds": bool(v["spearman"] <= criterion)}
                                       for k, v in kinds.items()}}
    verdicts = [c["holds"] for c in beats.values()] + [c["holds"] for c in excludes.values()]
    if claims["seed_no_worse"]["applicable"]:
        verdicts += [c["holds"] for c in claims["seed_no_worse"]["recognizers"].values()]
    verdicts += [c["holds"] for c in claims["degradation"]["kinds"].values()] or [False]
    claims["all_hold"] = bool(all(verdicts))
    return claims


def markdown(claims: dict) -> str:
    """The criteria as README lists them, one line each, with the figures."""
    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = [f"Ship criteria for `{claims['model']}` (FMR {claims['fmr']:g}, pAUC u ≤ 0.3, {claims['data']}):", ""]
    for recognizer, c in claims["beats_every_method"].items():
        lines.append(f"- {recognizer}: below every other method: {verdict(c['holds'])} "
                     f"({c['model']:.4f} vs best other, {c['best_other']}, {c['best_other_value']:.4f})")
    for recognizer, c in claims["difference_excludes_zero"].items():
        ci = c["ci"] or [float("nan"), float("nan")]
        lines.append(f"- {recognizer}: 95% interval of the difference to {c['versus']} below zero: "
                     f"{verdict(c['holds'])} ([{ci[0]:+.4f}, {ci[1]:+.4f}])")
    seed = claims["seed_no_worse"]
    if seed["applicable"]:
        for recognizer, c in seed["recognizers"].items():
            lines.append(f"- {recognizer}: seed held-out set no worse than {seed['reference']}: {verdict(c['holds'])}"
                         f" ({c['model']:.4f} vs {c['reference']:.4f})")
    else:
        lines.append(f"- seed held-out set no worse than {REFERENCE_TAG}: not applicable ({seed['why']})")
    failing = [k for k, c in claims["degradation"]["kinds"].items() if not c["holds"]]
    figures = ", ".join(f"{k} {c['spearman']:+.2f}" for k, c in claims["degradation"]["kinds"].items())
    lines.append(f"- degradation response ≤ {claims['degradation']['criterion']} for every kind: "
                 f"{verdict(not failing and bool(claims['degradation']['kinds']))} ({figures})")
    lines.append("")
    lines.append(f"All criteria: {verdict(claims['all_hold'])}.")
    return "\n".join(lines)
