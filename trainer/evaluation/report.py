"""Tables of a report in Markdown (what ``trainer evaluate`` prints and the README shows)."""

from __future__ import annotations

from trainer.evaluation.methods import MODEL_PREFIX, ORACLE


def _method(method: str, model: str) -> str:
    name = method.removeprefix(MODEL_PREFIX)
    if method == MODEL_PREFIX + model:
        return f"**{name}**"
    return name + (" (oracle)" if method == ORACLE else "")


def _ci(row: dict, key: str) -> str:
    ci = row.get("ci_" + key)
    return f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""


def results_table(report: dict, data: str, fmr: float = 1e-3) -> str:
    """pAUC (u ≤ 0.2, 0.3, with 95% intervals) and AUC per recogniser and method, on one set."""
    lines = ["| recogniser | method | pAUC u≤0.2 [95% CI] | pAUC u≤0.3 [95% CI] | AUC u≤0.95 |",
             "|---|---|---|---|---|"]
    for row in report["results"]:
        if row["data"] == data and row["fmr"] == fmr:
            lines.append(f"| {row['recognizer']} | {_method(row['method'], report['model'])} | "
                         f"{row['pauc_0.2']:.4f}{_ci(row, 'pauc_0.2')} | {row['pauc_0.3']:.4f}{_ci(row, 'pauc_0.3')} | "
                         f"{row['auc']:.4f} |")
    return "\n".join(lines)


def fmr_table(report: dict, data: str) -> str:
    """pAUC (u ≤ 0.3) at every FMR, per recogniser and method, on one set."""
    fmrs = sorted({r["fmr"] for r in report["results"]}, reverse=True)
    lines = ["| recogniser | method | " + " | ".join(f"FMR {f:g}" for f in fmrs) + " |",
             "|---|---|" + "---|" * len(fmrs)]
    table: dict[tuple[str, str], dict[float, float]] = {}
    for row in report["results"]:
        if row["data"] == data:
            table.setdefault((row["recognizer"], row["method"]), {})[row["fmr"]] = row["pauc_0.3"]
    for (recognizer, method), by_fmr in table.items():
        cells = " | ".join(f"{by_fmr[f]:.4f}" if f in by_fmr else "" for f in fmrs)
        lines.append(f"| {recognizer} | {_method(method, report['model'])} | {cells} |")
    return "\n".join(lines)


def differences_table(report: dict) -> str:
    lines = ["| held-out set | recogniser | model − best other (pAUC u≤0.3, FMR 1e-3) | 95% CI |", "|---|---|---|---|"]
    for row in report.get("differences", []):
        lines.append(f"| {row['data']} | {row['recognizer']} | {row['pauc_0.3']:+.4f} vs {_method(row['versus'], '')} |"
                     f" [{row['ci'][0]:+.4f}, {row['ci'][1]:+.4f}] |")
    return "\n".join(lines)


def degradation_table(report: dict) -> str:
    block = report.get("degradation", {})
    if not block.get("kinds"):
        return ""
    steps = len(next(iter(block["kinds"].values()))["score"])
    head = "| kind | ρ (all steps) | ρ (clean + mild) | " + " | ".join(f"step {s}" for s in range(steps)) + " |"
    lines = [head, "|---|---|---|" + "---|" * steps]
    for kind, entry in block["kinds"].items():
        cells = []
        for n in range(steps):
            similarity = f" / {entry['similarity'][n]:.3f}" if "similarity" in entry else ""
            cells.append(f"{entry['strengths'][n]:g}: {entry['score'][n]:.1f}{similarity}")
        lines.append(f"| {kind} | {entry['spearman']:+.2f} | {entry['spearman_mild']:+.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(report: dict) -> str:
    """Everything a terminal shows after ``trainer evaluate``."""
    from trainer.evaluation import claims, thresholds

    parts = []
    for data, info in report["sets"].items():
        parts.append(f"## {data}: {info['identities']} people, {info['crops']} images, "
                     f"{info['pairs']['mated']} mated and {info['pairs']['nonmated']} non-mated pairs")
        for method, why in info.get("unavailable", {}).items():
            parts.append(f"({method}: {why})")
        parts.append(results_table(report, data))
    if report.get("differences"):
        parts += ["## Model against the best other method", differences_table(report)]
    if report.get("thresholds"):
        parts += [f"## Thresholds ({report['thresholds']['data']}, FMR {report['thresholds']['fmr']:g})",
                  thresholds.markdown(report["thresholds"])]
    if report.get("degradation", {}).get("kinds"):
        parts += [f"## Degradation response ({report['degradation']['data']}, "
                  f"{report['degradation']['originals']} clean crops; strength: mean score / SFace similarity)",
                  degradation_table(report)]
    if report.get("claims"):
        parts += ["## Ship criteria", claims.markdown(report["claims"])]
    return "\n\n".join(parts)


def readme_block(report: dict, folder: str) -> str:
    """The generated part of README's model-evaluation section (``folder``: the model's folder in the repo)."""
    from trainer.evaluation import claims, thresholds

    main = report["main"]
    info = report["sets"][main]
    parts = [f"Main held-out set `{main}`: {info['identities']} people, {info['crops']} images, "
             f"{info['pairs']['mated']:,} mated and {info['pairs']['nonmated']:,} non-mated pairs; FMR 1e-3; "
             f"95% intervals from {report['protocol']['bootstrap']['replicates']} bootstrap replicates over "
             "identities; the report's model in bold.", results_table(report, main),
             "The model against the best other method on each set (the oracle excluded; the same replicates "
             "for both, so the interval is that of the difference):", differences_table(report),
             f"pAUC (u ≤ 0.3) at each FMR on `{main}`:", fmr_table(report, main)]
    for data, other in report["sets"].items():
        if data != main:
            parts += [f"`{data}` ({other['identities']} people, {other['crops']} images):", results_table(report, data)]
    parts += [f"Thresholds (`{report['model']}` on `{report['thresholds']['data']}`, FMR "
              f"{report['thresholds']['fmr']:g}): reject faces below the score in the first column.",
              thresholds.markdown(report["thresholds"])]
    if report.get("degradation", {}).get("kinds"):
        block = report["degradation"]
        parts += [f"Degradation response on `{block['data']}` ({block['originals']} clean crops of "
                  f"{block['identities']} people, every kind at every step; cells: strength: mean score / "
                  "SFace mean genuine similarity; steps 1-3 are the mild ones):", degradation_table(report)]
    parts += [claims.markdown(report["claims"]),
              f"![ERC]({folder}/report.png)", f"![intervals]({folder}/report-intervals.png)",
              f"![thresholds]({folder}/report-thresholds.png)", f"![degradation]({folder}/report-degradation.png)"]
    return "\n\n".join(parts)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    if len(sys.argv) != 2:
        sys.exit("usage: python -m trainer.evaluation.report engines/models/<model>/report.json")
    path = Path(sys.argv[1])
    print(readme_block(json.loads(path.read_text()), str(path.parent)))
