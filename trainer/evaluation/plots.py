"""Figures of a report, readable at README width (about 900 px).

- ``erc``: FNMR vs fraction discarded, one panel per recogniser and FMR, every method; the
  report's model solid and thick, the other methods dashed, the oracle dotted;
- ``forest``: pAUC (u ≤ 0.3, FMR 1e-3) of every method with its 95% bootstrap interval, per
  recogniser, per held-out set;
- ``thresholds``: fraction of images discarded and FNMR at FMR 1e-3 against the quality
  threshold, per recogniser;
- ``degradation``: per kind, the recogniser's similarity and the model's score along the ladder.
"""

from __future__ import annotations

from pathlib import Path

from trainer.evaluation.methods import MODEL_PREFIX, ORACLE


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(method: str, model_method: str) -> dict:
    if method == model_method:
        return {"linestyle": "-", "linewidth": 2.6, "color": "black", "zorder": 5}
    if method == ORACLE:
        return {"linestyle": ":", "linewidth": 1.6, "color": "grey"}
    return {"linestyle": "--", "linewidth": 1.3}


def _label(method: str) -> str:
    return method.removeprefix(MODEL_PREFIX) + (" (oracle)" if method == ORACLE else "")


def erc(report: dict, data: str, target: Path) -> None:
    plt = _pyplot()
    curves = report["sets"][data]["curves"]
    fmrs = [float(f) for f in next(iter(next(iter(curves.values())).values()))]
    names = list(curves)
    model_method = MODEL_PREFIX + report["model"]
    fig, axes = plt.subplots(len(names), len(fmrs), figsize=(4.3 * len(fmrs), 3.5 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, fmr in enumerate(fmrs):
            ax = axes[row][col]
            for method, by_fmr in curves[name].items():
                ax.plot(report["discard"], by_fmr[str(fmr)], label=_label(method), **_style(method, model_method))
            ax.set_title(f"{name}, FMR {fmr:g}", fontsize=10)
            ax.set_xlabel("fraction discarded")
            ax.set_ylabel("FNMR")
            ax.axvline(0.3, color="lightgrey", linewidth=0.8)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"Error vs reject on {data} ({report['sets'][data]['identities']} people, "
                 f"{report['sets'][data]['crops']} images)", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(target, dpi=90)
    plt.close(fig)


def forest(report: dict, target: Path, fmr: float = 1e-3, area: str = "pauc_0.3") -> None:
    plt = _pyplot()
    sets = [d for d in report["sets"] if any("ci_" + area in r for r in report["results"] if r["data"] == d)]
    names = list(dict.fromkeys(r["recognizer"] for r in report["results"]))
    if not sets:
        return
    model_method = MODEL_PREFIX + report["model"]
    fig, axes = plt.subplots(len(sets), len(names), figsize=(5.2 * len(names), 0.42 * 10 * len(sets) + 0.6),
                             squeeze=False)
    for row, data in enumerate(sets):
        for col, name in enumerate(names):
            ax = axes[row][col]
            rows = sorted((r for r in report["results"] if r["data"] == data and r["recognizer"] == name
                           and r["fmr"] == fmr and "ci_" + area in r), key=lambda r: -r[area])
            for y, r in enumerate(rows):
                low, high = r["ci_" + area]
                colour = "black" if r["method"] == model_method else ("grey" if r["method"] == ORACLE else "tab:blue")
                ax.plot([low, high], [y, y], color=colour, linewidth=2)
                ax.plot(r[area], y, "o", color=colour)
            ax.set_yticks(range(len(rows)), [_label(r["method"]) for r in rows], fontsize=8)
            ax.set_title(f"{data}, {name}", fontsize=10)
            ax.set_xlabel(f"pAUC (u ≤ {area.rsplit('_', 1)[1]}) at FMR {fmr:g}, 95% CI; lower is better",
                          fontsize=8)
            ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    plt.close(fig)


def thresholds(report: dict, target: Path) -> None:
    plt = _pyplot()
    table = report.get("thresholds")
    if not table:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    twin = ax.twinx()
    for name, rows in table["recognizers"].items():
        ax.plot([r["quality"] for r in rows], [r["fnmr"] for r in rows], "-o", markersize=3,
                label=f"FNMR, {name}")
    first = next(iter(table["recognizers"].values()))
    twin.plot([r["quality"] for r in first], [r["discarded"] for r in first], "--", color="grey",
              label="images discarded")
    ax.set_xlabel(f"reject below quality ({report['model']})")
    ax.set_ylabel(f"FNMR at FMR {table['fmr']:g}")
    twin.set_ylabel("fraction of images discarded")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center left")
    ax.set_title(f"Thresholds on {table['data']}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    plt.close(fig)


def degradation(report: dict, target: Path) -> None:
    plt = _pyplot()
    block = report.get("degradation", {})
    kinds = block.get("kinds", {})
    if not kinds:
        return
    columns = 4
    rows = -(-len(kinds) // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(2.45 * columns, 2.5 * rows), sharey=True, squeeze=False)
    axes = grid.reshape(-1)
    for ax, (kind, entry) in zip(axes, kinds.items(), strict=False):
        steps = range(len(entry["score"]))
        clean = entry["score"][0] or 1.0
        ax.plot(steps, [s / clean for s in entry["score"]], "-o", color="black", markersize=3, label="model score")
        if "similarity" in entry:
            ax.plot(steps, [s / entry["similarity"][0] for s in entry["similarity"]], "--s", markersize=3,
                    label="SFace genuine similarity")
        ax.axvline(block["mild_steps"] + 0.5, color="lightgrey", linewidth=0.8)
        ax.set_title(f"{kind}: ρ={entry['spearman']:+.2f} (mild {entry['spearman_mild']:+.2f})", fontsize=8)
        ax.set_xticks(list(steps))
        ax.set_xlabel("step (0 clean, 1-3 mild)", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(kinds):]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, fontsize=8, loc="center")
    for ax in grid[:, 0]:
        ax.set_ylabel("relative to clean")
    fig.suptitle(f"Degradation ladder on {block['data']} ({block['originals']} clean crops)", fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    plt.close(fig)
