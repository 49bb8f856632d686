"""Recipe experiments for the shipped quality model, selected on training identities only.

Protocol (fixed before the first candidate ran; README "The quality model" repeats it):

- **Validation split**: 14 of the 70 identities of ``pins/train`` (20%), drawn once by
  ``numpy.random.default_rng(VALIDATION_SEED)`` from the sorted names (:func:`split`). They
  are left out of every candidate's training and form the validation set; ``pins/heldout``
  is never used to choose.
- **Candidates** train on the other 56 ``pins/train`` identities + ``celeba`` (+ the seed
  set's ``train/`` where a candidate says so), with SFace pseudo-labels at the reference
  constants, through the trainer's own code (``trainer labels``, ``fit``, ``export``).
- **Selection score** V: the mean over SFace and dlib of pAUC (u ≤ 0.3, FMR 1e-3) on the
  validation identities; lower is better. A candidate whose degradation response on the
  validation identities (the ship criterion's ladder, 5 clean crops per person) misses
  −0.8 for some kind ranks after every candidate that meets it for all kinds. Differences
  in V below ``TIE`` are ties, decided by the lower cost (feature cache + fit time).
- **Rounds**: (A) training data and degraded fraction at cut 27 with the reference
  schedule; (B) learning rate, steps and epochs at cut 27 with A's choice; (C) cuts 25 and
  24 with A's choice. Each round keeps the winner by the rule above. A candidate whose
  rebuild on the full data cannot fit the 60-minute budget on this machine is reported
  and not shipped.
- Each candidate's ``pins/heldout`` figures are computed too, **for the record only**.

Commands::

    python bench/recipes.py split                       # the validation identities
    python bench/recipes.py run A0 --fraction 0 --cut 27 --epochs 20 --lr 1e-4 --milestones 5,10
    python bench/recipes.py table --out engines/models/sddfiqa-mfn-2/recipes.md
    python bench/recipes.py reevaluate B2 A0 ...         # export finished candidates again, measure again
    python bench/recipes.py blend B2                     # B2's scores averaged with the embedding norm's

Everything lands in ``$FACEGATE_CACHE/experiments/`` (results in ``results.json``); the
embedding store, feature cache and evaluation caches are the trainer's, shared by content.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, replace

import numpy as np

import trainer  # noqa: F401  (sets OpenMP's wait policy before torch loads)
from trainer.fit_options import HEADS, PAPER_HEAD

VALIDATION_SEED = 11  # the number; fixed before any run
VALIDATION_IDENTITIES = 14
SPLIT_VERSION = 1
TIE = 0.0005
# 2: exports whose backbone keeps SFace's BatchNorm epsilons (1 rebuilt it with torch's
# default, so the exported file computed other features than the head was trained on).
EXPORT_VERSION = 2
LADDER_PER_IDENTITY = 5
RECOGNIZERS = ("sface", "dlib-resnet")


def _cache() -> Path:
    from engines.paths import cache_root

    return cache_root() / "experiments"


def _faces() -> Path:
    from trainer.evaluation.heldout import faces_root

    return faces_root()


def validation_names() -> list[str]:
    """The validation identities: 14 of pins/train's 70, drawn once with a fixed seed."""
    names = sorted(p.name for p in (_faces() / "pins" / "train").iterdir() if p.is_dir())
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(names))
    return sorted(names[i] for i in order[:VALIDATION_IDENTITIES])


def split() -> tuple[Path, Path]:
    """``train/`` (the other identities) and ``validation/`` as folders of links to the photos."""
    base = _cache() / f"split-v{SPLIT_VERSION}"
    done = base / "split.json"
    if done.is_file():
        return base / "train", base / "validation"
    shutil.rmtree(base, ignore_errors=True)
    source = _faces() / "pins" / "train"
    chosen = set(validation_names())
    for person in sorted(p for p in source.iterdir() if p.is_dir()):
        target = base / ("validation" if person.name in chosen else "train") / person.name
        target.mkdir(parents=True)
        for photo in sorted(person.iterdir()):
            (target / photo.name).symlink_to(photo)
    done.write_text(json.dumps({"seed": VALIDATION_SEED, "validation": sorted(chosen)}, indent=1) + "\n")
    return base / "train", base / "validation"


def _cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _labels(roots: list[Path], fraction: float, out: Path) -> Path:
    """``trainer labels`` on the roots with degraded copies (reused when already made)."""
    from trainer import labels_cli
    from trainer.cli import build_parser

    if (out / "labels.csv").is_file():
        return out
    argv = ["labels", *[x for r in roots for x in ("--data", str(r))], "--out", str(out) + ".tmp"]
    if fraction:
        argv += ["--degrade-fraction", str(fraction)]
    labels_cli.run(build_parser().parse_args(argv))
    shutil.rmtree(out, ignore_errors=True)
    Path(str(out) + ".tmp").rename(out)
    return out


def run(args: argparse.Namespace) -> dict:
    """One candidate: labels → feature cache → fit → export → validation (and held-out) figures."""
    from trainer.export import export_onnx
    from trainer.fit import cache_features, fit
    from trainer.fit_options import FitOptions
    from trainer.sddfiqa import RegressorParams

    train_root, validation_root = split()
    roots = [train_root, _faces() / "celeba"]
    if args.with_seed:
        from trainer.seedset import build_seed_set

        roots.append(build_seed_set(progress=False) / "train")
    data_name = "+".join(["pins56", "celeba"] + (["seed"] if args.with_seed else []))
    work = _cache() / args.name
    timing: dict[str, float] = {}
    started, cpu = time.perf_counter(), _cpu()
    labels_dir = _labels(roots, args.fraction, _cache() / f"labels-{data_name}-f{args.fraction:g}")
    timing["labels_s"] = round(time.perf_counter() - started, 1)
    params = replace(RegressorParams(), epochs=args.epochs, learning_rate=args.lr,
                     lr_milestones=tuple(int(m) for m in args.milestones.split(",") if m))
    options = FitOptions(frozen_blocks=args.cut, batch_size=args.batch_size, head=args.head)
    labels_csv = labels_dir / "labels.csv"
    started = time.perf_counter()
    report = cache_features(labels_csv, params, options)
    timing["cache_s"] = round(time.perf_counter() - started, 1)
    timing["cache_computed"] = report.computed if report else 0
    started, cpu = time.perf_counter(), _cpu()
    last = fit(labels_csv, work / "fit", params, options, resume=True)
    timing["fit_s"] = round(time.perf_counter() - started, 1)
    timing["fit_cpu_s"] = round(_cpu() - cpu, 1)
    history = json.loads((work / "fit" / "fit.json").read_text())["history"]
    model_dir = work / "model"
    export_onnx(last, model_dir, "sddfiqa-mfn", f"val-{args.name}-e{EXPORT_VERSION}")
    labels_summary = json.loads((labels_dir / "summary.json").read_text())
    result = {"name": args.name, "round": args.round, "data": data_name, "fraction": args.fraction, "cut": args.cut,
              "head": args.head, "epochs": args.epochs, "lr": args.lr, "milestones": args.milestones,
              "batch_size": args.batch_size,
              "labelled": labels_summary["labelled"], "identities": labels_summary["identities"],
              "copies": (labels_summary.get("degraded_copies") or {}).get("copies", 0),
              "fit_seconds_per_epoch": [h["seconds"] for h in history], "val_mae": history[-1]["val_mae"],
              "train_loss": history[-1]["train_loss"], "load_average": os.getloadavg()[0], **timing,
              "model": str(model_dir), "params": asdict(params), "export": EXPORT_VERSION}
    result.update(evaluate_candidate(model_dir, validation_root))
    _save(result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("params", "fit_seconds_per_epoch")}, indent=1))
    return result


def reevaluate(name: str) -> dict:
    """Export a finished candidate's checkpoint again and measure it again, keeping its costs.

    For candidates exported before the BatchNorm-epsilon fix (their files computed other
    features than the ones their heads were trained on); ``export`` records which export.
    """
    from trainer.export import export_onnx

    result = _load()[name]
    if result.get("export") == EXPORT_VERSION:
        return result
    work = _cache() / name
    last = work / "fit" / "checkpoints" / "last.pt"
    if not last.is_file():
        raise SystemExit(f"{name}: no finished fit at {last}")
    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    export_onnx(last, model_dir, "sddfiqa-mfn", f"val-{name}-e{EXPORT_VERSION}")
    _, validation_root = split()
    result.setdefault("before_export_fix", {k: result[k] for k in ("validation", "validation_ladder",
                                                                 "heldout_record_only")})
    result.update(evaluate_candidate(model_dir, validation_root))
    result["export"] = EXPORT_VERSION
    result.setdefault("head", "sddfiqa")
    _save(result)
    return result


def blend(name: str, weights: list[float]) -> str:
    """A finished candidate's scores averaged with the embedding norm's (both standardised per
    set), at each weight on the norm: validation figures, and pins/heldout for the record."""
    from trainer.evaluate import SetEvaluation
    from trainer.evaluation.heldout import open_folder

    def standard(values: np.ndarray) -> np.ndarray:
        return (values - values.mean()) / values.std()

    _, validation_root = split()
    lines = ["| set | weight on the norm | pAUC SFace | pAUC dlib | V |", "|---|---|---|---|---|"]
    for label, source in (("validation", open_folder(validation_root, "pins/train-validation")),
                          ("pins/heldout (record only)", "pins")):
        evaluation = SetEvaluation.open(source, recognizers=RECOGNIZERS, replicates=0, progress=False)
        model = evaluation.add_model(str(_cache() / name / "model"))
        methods = {0.0: model, 1.0: "embedding_norm"}
        for weight in weights:
            methods[weight] = f"blend{weight:g}"
            evaluation.add_scores(methods[weight], (1 - weight) * standard(evaluation.scores[model])
                                  + weight * standard(evaluation.scores["embedding_norm"]))
        rows = {(r["method"], r["recognizer"]): r["pauc_0.3"] for r in evaluation.rows() if r["fmr"] == 1e-3}
        for weight, method in sorted(methods.items()):
            sface, dlib = rows[(method, "sface")], rows[(method, "dlib-resnet")]
            lines.append(f"| {label} | {weight:g} | {sface:.4f} | {dlib:.4f} | {(sface + dlib) / 2:.4f} |")
    return "\n".join(lines)


def evaluate_candidate(model_dir: Path, validation_root: Path) -> dict:
    """Validation figures (what selects) and pins/heldout figures (for the record)."""
    from engines.paths import cache_root
    from trainer.evaluate import SetEvaluation
    from trainer.evaluation.degradation import degradation_response
    from trainer.evaluation.heldout import open_folder
    from trainer.evaluation.methods import ModelScores

    out: dict = {}
    cache = cache_root()
    validation = SetEvaluation.open(open_folder(validation_root, "pins/train-validation"), recognizers=RECOGNIZERS,
                                    replicates=0)
    method = validation.add_model(str(model_dir))
    out["validation"] = _areas(validation, method)
    scorer = ModelScores(str(model_dir), cache, progress=True)
    ladder = degradation_response(validation.heldout, LADDER_PER_IDENTITY, validation.scores[method],
                                  scorer.scores, validation.sface, cache)
    out["validation_ladder"] = {k: {"spearman": v["spearman"], "spearman_mild": v["spearman_mild"]}
                                for k, v in ladder["kinds"].items()}
    del validation
    heldout = SetEvaluation.open("pins", recognizers=RECOGNIZERS, replicates=0)
    out["heldout_record_only"] = _areas(heldout, heldout.add_model(str(model_dir)))
    return out


def _areas(evaluation, method: str) -> dict:
    """pAUC (u ≤ 0.3, FMR 1e-3) per recogniser of the candidate and of the baselines, and V."""
    rows = [r for r in evaluation.rows() if r["fmr"] == 1e-3]
    table: dict = {}
    for row in rows:
        name = "model" if row["method"] == method else row["method"]
        if name == "model" or not name.startswith("model:"):
            table.setdefault(name, {})[row["recognizer"]] = row["pauc_0.3"]
    table["V"] = {name: round(float(np.mean(list(v.values()))), 6) for name, v in table.items()}
    return table


def _results_file() -> Path:
    return _cache() / "results.json"


def _load() -> dict:
    return json.loads(_results_file().read_text()) if _results_file().is_file() else {}


def _save(result: dict) -> None:
    results = _load()
    results[result["name"]] = result
    _results_file().parent.mkdir(parents=True, exist_ok=True)
    tmp = _results_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(_results_file())


def meets_ladder(result: dict) -> bool:
    return all(v["spearman"] <= -0.8 for v in result["validation_ladder"].values())


def ranking(results: list[dict]) -> list[dict]:
    """Candidates in the order the selection rule prefers them (see the module docstring)."""
    def cost(r: dict) -> float:
        return r["cache_s"] + r["fit_s"]

    ordered = sorted(results, key=lambda r: (not meets_ladder(r), r["validation"]["V"]["model"]))
    if not ordered:
        return ordered
    best = ordered[0]
    tied = [r for r in ordered if meets_ladder(r) == meets_ladder(best)
            and r["validation"]["V"]["model"] - best["validation"]["V"]["model"] < TIE]
    winner = min(tied, key=cost)
    return [winner] + [r for r in ordered if r is not winner]


def table(args: argparse.Namespace) -> str:
    results = list(_load().values())
    if args.round:
        results = [r for r in results if r["round"] in args.round]
    order = ranking(results)
    kinds = list(order[0]["validation_ladder"]) if order else []
    lines = [
        "| rank | candidate | round | data | degraded fraction | cut | head | epochs | lr (steps) | labelled "
        "| val pAUC SFace | val pAUC dlib | **V** | worst ladder ρ (kind) | cache min | fit min "
        "| held-out pAUC SFace / dlib (record only) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rank, r in enumerate(order, 1):
        val, held = r["validation"]["model"], r["heldout_record_only"]["model"]
        worst = max(kinds, key=lambda k: r["validation_ladder"][k]["spearman"])
        lines.append(
            f"| {rank} | {r['name']} | {r['round']} | {r['data']} | {r['fraction']:g} | {r['cut']} "
            f"| {r.get('head', PAPER_HEAD)} | {r['epochs']} "
            f"| {r['lr']:g} ({r['milestones']}) | {r['labelled']:,} | {val['sface']:.4f} | {val['dlib-resnet']:.4f} "
            f"| **{r['validation']['V']['model']:.4f}** | {r['validation_ladder'][worst]['spearman']:+.2f} ({worst}) "
            f"| {r['cache_s'] / 60:.1f} | {r['fit_s'] / 60:.1f} | {held['sface']:.4f} / {held['dlib-resnet']:.4f} |")
    if order:
        base = order[0]["validation"]
        lines += ["", "Baselines on the validation identities (pAUC u ≤ 0.3, FMR 1e-3; SFace / dlib / V): "
                  + "; ".join(f"{m} {base[m]['sface']:.4f} / {base[m]['dlib-resnet']:.4f} / {base['V'][m]:.4f}"
                              for m in base if m not in ("model", "V"))]
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("split", help="print the validation identities (and make the split folders)")
    one = sub.add_parser("run", help="train and measure one candidate")
    one.add_argument("name")
    one.add_argument("--round", default="A")
    one.add_argument("--fraction", type=float, default=0.0)
    one.add_argument("--with-seed", action="store_true", help="add the seed set's train/ to the training data")
    one.add_argument("--cut", type=int, default=27)
    one.add_argument("--epochs", type=int, default=20)
    one.add_argument("--lr", type=float, default=1e-4)
    one.add_argument("--milestones", default="5,10")
    one.add_argument("--batch-size", type=int, default=32)
    one.add_argument("--head", default=PAPER_HEAD, choices=HEADS, help="quality head")
    again = sub.add_parser("reevaluate", help="export finished candidates again and measure them again")
    again.add_argument("names", nargs="+")
    mix = sub.add_parser("blend", help="a candidate's scores averaged with the embedding norm's, per weight")
    mix.add_argument("name")
    mix.add_argument("--weights", default="0.25,0.5,0.75", help="weights on the norm (default 0.25,0.5,0.75)")
    show = sub.add_parser("table", help="every candidate, in the order the selection rule prefers")
    show.add_argument("--round", default=None, help="only these rounds, e.g. AB")
    show.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.command == "split":
        train, validation = split()
        print(f"validation identities ({VALIDATION_IDENTITIES} of 70, seed {VALIDATION_SEED}): "
              + ", ".join(validation_names()))
        print(f"train: {train}\nvalidation: {validation}")
    elif args.command == "run":
        run(args)
    elif args.command == "reevaluate":
        for name in args.names:
            result = reevaluate(name)
            print(name, json.dumps({"V": result["validation"]["V"]["model"],
                                    "before": result["before_export_fix"]["validation"]["V"]["model"]}), flush=True)
    elif args.command == "blend":
        print(blend(args.name, [float(w) for w in args.weights.split(",") if w]))
    else:
        print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
