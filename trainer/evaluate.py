"""``trainer evaluate``: does the quality model help recognition on held-out identities, more
than what a user could pick instead?

Protocol (CR-FIQA's error-versus-reject, as DESIGN says): every pair of distinct images of a
held-out set, mated and non-mated; a pair's quality is the lower of its two scores; discard
the lowest-quality fraction u of each, recompute the threshold at FMR 1e-2, 1e-3, 1e-4 on the
remaining non-mated pairs, measure FNMR on the remaining mated ones; areas under FNMR vs u
(pAUC to 0.2 and 0.3, AUC to 0.95), lower is better. Every method on the same pairs, with
SFace and with dlib's ResNet; 95% bootstrap intervals over identities (pAUC at FMR 1e-3) for
every method and for the difference between the model and the best other method; a
threshold table; the degradation response; the ship criteria (``claims``).

Two ways in:

- :func:`evaluate` writes a full report (JSON + figures) for one model over one or more
  held-out sets (the first is the main one);
- :class:`SetEvaluation` keeps one held-out set ready (embeddings, pairs, baselines and their
  bootstrap replicates, all cached) so an experiment loop can :meth:`~SetEvaluation.compare`
  candidate models in seconds to a minute each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from engines.paths import cache_root
from trainer.erc import DECISION_FMR, DISCARD, FMRS, area
from trainer.evaluation import claims as ship
from trainer.evaluation import plots
from trainer.evaluation.bootstrap import REPLICATES, Bootstrap
from trainer.evaluation.degradation import degradation_response, spearman_by_kind
from trainer.evaluation.heldout import MAIN_SUITE, SUITES, HeldoutSet, open_folder, open_suite
from trainer.evaluation.methods import (
    MODEL_PREFIX,
    ORACLE,
    REFERENCE_MODEL,
    MethodScores,
    ModelScores,
    baseline_scores,
    embeddings,
)
from trainer.evaluation.pairs import all_pairs
from trainer.evaluation.report import results_table, summary
from trainer.evaluation.thresholds import threshold_table
from trainer.evaluation.weighted_erc import ErcSet

RECOGNIZERS = ("sface", "dlib-resnet")
LADDER_PER_IDENTITY = {"seed/heldout": 6}  # clean crops per person on the degradation ladder (default 5)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


class SetEvaluation:
    """One held-out set made ready once; any number of quality methods evaluated on its pairs."""

    def __init__(self, heldout: HeldoutSet, recognizers: tuple[str, ...] = RECOGNIZERS, cache: Path | None = None,
                 replicates: int = REPLICATES, progress: bool = True) -> None:
        self.heldout = heldout
        self.cache = cache or cache_root()
        self.progress = progress
        _say(progress, f"{heldout.name}: {len(heldout)} crops of {heldout.identity_count} people")
        self.embeddings = {name: embeddings(heldout, name, self.cache, progress) for name in recognizers}
        self.sface = self.embeddings.get("sface")
        if self.sface is None:
            self.sface = embeddings(heldout, "sface", self.cache, progress)
        self.pairs = all_pairs(heldout.identities)
        self.similarities = {name: self.pairs.similarities(vectors) for name, vectors in self.embeddings.items()}
        self.erc = ErcSet(self.pairs, self.similarities)
        self.scores: dict[str, np.ndarray] = {}
        self.curves: dict[str, dict[str, dict[float, np.ndarray]]] = {}
        fingerprint = hashlib.sha256(("|".join(heldout.keys) + "|" + "|".join(heldout.identities)).encode())
        self.bootstrap = Bootstrap(self.erc, DECISION_FMR, replicates, cache_dir=self.cache / "eval" / "bootstrap",
                                   set_fingerprint=fingerprint.hexdigest()) if replicates else None
        self.baselines: MethodScores = baseline_scores(heldout, self.cache, self.sface, progress)
        for method, values in self.baselines.scores.items():
            self.add_scores(method, values)

    @classmethod
    def open(cls, source: str | Path | HeldoutSet, **kwargs) -> SetEvaluation:
        """A suite name (``pins``, ``seed``, ``pins-degraded``), a folder of aligned crops, or a set."""
        cache = kwargs.get("cache")
        if isinstance(source, HeldoutSet):
            heldout = source
        elif isinstance(source, str) and source in SUITES:
            heldout = open_suite(source, cache, kwargs.get("progress", True))
        else:
            heldout = open_folder(Path(source))
        return cls(heldout, **kwargs)

    def add_scores(self, method: str, values: np.ndarray) -> None:
        """A method's quality per image: its pairs are sorted and its plain curves computed."""
        self.scores[method] = np.asarray(values, np.float64)
        self.erc.add_method(method, self.scores[method])
        self.curves[method] = self.erc.curves(method, FMRS)

    def add_model(self, model: str) -> str:
        """Score the set with a quality model folder or name; returns its method name ``model:<tag>``."""
        scorer = ModelScores(model, self.cache, self.progress)
        if scorer.method not in self.scores:
            self.add_scores(scorer.method, scorer.scores(self.heldout.crops, self.heldout.keys))
        return scorer.method

    def drop(self, method: str) -> None:
        """Forget a method (an experiment loop drops each candidate after comparing it)."""
        self.scores.pop(method, None)
        self.curves.pop(method, None)
        self.erc.drop_method(method)

    def run_bootstrap(self, methods: list[str] | None = None) -> None:
        if self.bootstrap is None:
            return
        for method in methods or list(self.scores):
            if (self.erc.recognizers[0], method) not in self.bootstrap.values:
                self.bootstrap.run(method, self.scores[method], self.progress)

    def rows(self) -> list[dict]:
        """One row per recogniser, method and FMR: the areas, with intervals where bootstrapped."""
        out = []
        for recognizer in self.erc.recognizers:
            for method, curves in self.curves.items():
                for fmr in FMRS:
                    curve = curves[recognizer][fmr]
                    row = {"data": self.heldout.name, "recognizer": recognizer, "method": method, "fmr": fmr,
                           "auc": round(area(curve), 6), "pauc_0.2": round(area(curve, 0.2), 6),
                           "pauc_0.3": round(area(curve, 0.3), 6)}
                    if self.bootstrap and fmr == DECISION_FMR and (recognizer, method) in self.bootstrap.values:
                        for name in ("pauc_0.2", "pauc_0.3"):
                            row["ci_" + name] = self.bootstrap.interval(recognizer, method, name).as_list()
                    out.append(row)
        return out

    def differences(self, model_method: str) -> list[dict]:
        """Model − best other method (pAUC u ≤ 0.3, FMR 1e-3), per recogniser, with its interval."""
        out = []
        rows = self.rows()
        for recognizer in self.erc.recognizers:
            table = {r["method"]: r for r in rows if r["recognizer"] == recognizer and r["fmr"] == DECISION_FMR}
            rival = ship.best_other(table, model_method)
            row = {"data": self.heldout.name, "recognizer": recognizer, "fmr": DECISION_FMR, "method": model_method,
                   "versus": rival, "pauc_0.3": round(table[model_method]["pauc_0.3"] - table[rival]["pauc_0.3"], 6)}
            if self.bootstrap:
                self.run_bootstrap([model_method, rival])
                row["ci"] = self.bootstrap.difference(recognizer, model_method, rival).as_list()
            out.append(row)
        return out

    def compare(self, model: str) -> dict:
        """Quick verdict on a candidate: its pAUC (u ≤ 0.3, FMR 1e-3) with interval, the best other
        method and the interval of the difference, per recogniser (for experiment loops)."""
        method = self.add_model(model)
        diffs = {d["recognizer"]: d for d in self.differences(method)}
        rows = {r["recognizer"]: r for r in self.rows() if r["method"] == method and r["fmr"] == DECISION_FMR}
        return {"model": method, "data": self.heldout.name,
                "recognizers": {name: {"pauc_0.3": rows[name]["pauc_0.3"], "ci": rows[name].get("ci_pauc_0.3"),
                                       "best_other": diffs[name]["versus"], "difference": diffs[name]["pauc_0.3"],
                                       "difference_ci": diffs[name].get("ci")} for name in rows}}

    def set_info(self) -> dict:
        return {"crops": len(self.heldout), "identities": self.heldout.identity_count,
                "pairs": {"mated": len(self.pairs.mated), "nonmated": len(self.pairs.nonmated)},
                "unavailable": dict(self.baselines.unavailable),
                "curves": {r: {m: {str(f): [round(float(x), 6) for x in c[r][f]] for f in FMRS}
                               for m, c in self.curves.items()} for r in self.erc.recognizers}}


def _compared_models(primary: ModelScores, compare: tuple[str, ...] | None, cache: Path) -> list[str]:
    """Other quality models to put beside the primary: by default sddfiqa-mfn-1 and the current one."""
    from engines.errors import ModelError
    from engines.registry import current_model

    if compare is None:
        compare = [REFERENCE_MODEL]
        with contextlib.suppress(ModelError):
            compare.append(current_model("quality"))
    tags, out = {primary.tag}, []
    for model in compare:
        other = ModelScores(model, cache)
        # the same weights as the model under test are not a rival; the same model twice is listed once
        if other.sha256 != primary.sha256 and other.tag not in tags:
            tags.add(other.tag)
            out.append(model)
    return out


def evaluate(data: Path | str | None = None, out: Path | None = None, model: str | None = None,
             recognizers: tuple[str, ...] = RECOGNIZERS, cache: Path | None = None, progress: bool = True,
             also: tuple[str | Path, ...] = (), compare: tuple[str, ...] | None = None,
             replicates: int = REPLICATES, degradation: bool = True) -> dict:
    """Evaluate ``model`` (default: current) on ``data`` (a suite name or folder; default the seed
    set) and the sets in ``also``; write ``out`` (JSON) with figures beside it; return the report."""
    from engines.registry import current_model

    cache = cache or cache_root()
    sources = [data or "seed", *also]
    primary = ModelScores(model or current_model("quality"), cache, progress)
    others = _compared_models(primary, compare, cache)
    report: dict = {"model": primary.tag, "compared_models": [], "main": None, "discard": DISCARD.tolist(),
                    "protocol": _protocol(replicates), "sets": {}, "results": [], "differences": []}
    main_set: SetEvaluation | None = None
    for n, source in enumerate(sources):
        evaluation = SetEvaluation.open(source, recognizers=recognizers, cache=cache, replicates=replicates,
                                        progress=progress)
        method = evaluation.add_model(primary.model)
        compared = [evaluation.add_model(m) for m in others]
        report["compared_models"] = [m.removeprefix(MODEL_PREFIX) for m in compared]
        _say(progress, f"{evaluation.heldout.name}: bootstrap over identities ({replicates} replicates)")
        evaluation.run_bootstrap()
        report["sets"][evaluation.heldout.name] = evaluation.set_info()
        report["results"] += evaluation.rows()
        report["differences"] += evaluation.differences(method)
        if n == 0:
            main_set, report["main"] = evaluation, evaluation.heldout.name
            report["thresholds"] = threshold_table(evaluation.heldout.name, evaluation.scores[method],
                                                   evaluation.pairs, evaluation.similarities)
        else:
            del evaluation  # its sorted orders hold a few hundred MB on pins
    assert main_set is not None
    report["degradation"] = {}
    if degradation:
        _say(progress, f"{main_set.heldout.name}: degradation ladder")
        report["degradation"] = degradation_response(
            main_set.heldout, LADDER_PER_IDENTITY.get(main_set.heldout.name, 5),
            main_set.scores[MODEL_PREFIX + primary.tag], primary.scores, main_set.sface, cache, progress)
    report["degradation_response"] = spearman_by_kind(report["degradation"])
    report["claims"] = ship.ship_claims(report)
    if out is not None:
        write_report(report, out)
    return report


def _protocol(replicates: int) -> dict:
    return {"pairs": "all pairs of distinct images; mated = same identity",
            "pair_quality": "the lower of the two images' qualities",
            "discard": "lowest-quality fraction u of mated and of non-mated pairs; threshold recomputed at each u",
            "fmrs": list(FMRS), "areas": {"pauc_0.2": "u ≤ 0.2", "pauc_0.3": "u ≤ 0.3", "auc": "u ≤ 0.95"},
            "bootstrap": {"replicates": replicates, "unit": "identity (pairs follow)", "fmr": DECISION_FMR,
                          "interval": "percentile 95%", "areas": ["pauc_0.2", "pauc_0.3"]},
            "oracle": f"{ORACLE}: SDD-FIQA labels of the held-out set by SFace (knows the identities)"}


def write_report(report: dict, out: Path) -> None:
    """``out`` (JSON) and its figures beside it: ``<stem>.png`` (main ERC), ``<stem>-<set>.png``
    (other sets' ERC), ``<stem>-intervals.png``, ``<stem>-thresholds.png``, ``<stem>-degradation.png``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for data in report["sets"]:
        suffix = "" if data == report["main"] else "-" + data.replace("/", "-").replace("+", "-")
        plots.erc(report, data, out.with_name(f"{out.stem}{suffix}.png"))
    plots.forest(report, out.with_name(f"{out.stem}-intervals.png"))
    plots.thresholds(report, out.with_name(f"{out.stem}-thresholds.png"))
    plots.degradation(report, out.with_name(f"{out.stem}-degradation.png"))


def summary_table(report: dict, fmr: float = DECISION_FMR) -> str:
    """The main set's table (pAUC with intervals, AUC) at one FMR."""
    return results_table(report, report["main"], fmr)


__all__ = ["MAIN_SUITE", "RECOGNIZERS", "SetEvaluation", "evaluate", "summary", "summary_table", "write_report"]
