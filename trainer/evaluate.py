"""``trainer evaluate``: does the quality model help recognition on held-out identities?

Error-versus-reject curves (:mod:`trainer.erc`) for the model beside baselines on the
same pairs: random order, face size, detector score, Laplacian-variance sharpness and
the SDD-FIQA pseudo-labels themselves; with SFace and with dlib's ResNet. Writes a JSON
report (``results``: rows ``{recognizer, method, fmr, auc, pauc_0.2, pauc_0.3}``) and a
PNG plot. Also how the score falls as held-out crops are degraded (Spearman per kind).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import spearmanr

from engines.errors import DatasetError
from engines.paths import cache_root
from trainer.embed import EmbeddingCache, _content_key
from trainer.erc import DISCARD, FMRS, area, erc_curve
from trainer.labels import fast_labels
from trainer.recognizers import recognizer
from trainer.sddfiqa import LabelParams
from trainer.seedset import read_index

RECOGNIZERS = ("sface", "dlib-resnet")
HEURISTICS = ("random", "face_size", "detector_score", "sharpness")


def load_heldout(data: Path) -> tuple[list[str], np.ndarray, dict]:
    """Paths, identities and index rows (when the folder is a seed-set split) of aligned crops."""
    from trainer.datasets import IdentityFolders

    dataset = IdentityFolders(data)
    index_file = data.parent / "index.csv"
    rows = {str(data.parent / r.path): r for r in read_index(data.parent)} if index_file.is_file() else {}
    paths = [dataset.path(i) for i in range(len(dataset))]
    return paths, np.array([dataset.identity(i) for i in range(len(dataset))]), rows


def embed_cached(name: str, paths: list[str], crops: np.ndarray, cache: Path) -> np.ndarray:
    model = recognizer(name)
    store = EmbeddingCache(cache / "embeddings" / f"eval-{name}-{model.version}.npz")
    keys = [_content_key(Path(p)) for p in paths]
    missing = [i for i, k in enumerate(keys) if k not in store.vectors]
    if missing:
        vectors = model.embed(crops[missing])
        for i, vector in zip(missing, vectors, strict=True):
            store.vectors[keys[i]] = vector
        store.save()
    return np.stack([store.vectors[k] for k in keys])


def sharpness(crops: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of the grey crop: the classic focus measure."""
    return np.array([cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for c in crops])


def detector_scores(crops: np.ndarray) -> np.ndarray:
    """YuNet's best score on each crop (padded so the face is not cut at the border)."""
    from engines.detector import Detector

    detector = Detector(score_threshold=0.05, max_side=None)
    scores = []
    for crop in crops:
        padded = cv2.copyMakeBorder(crop, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=0)
        faces = detector.detect(padded)
        scores.append(float(faces.scores.max()) if len(faces) else 0.0)
    return np.array(scores)


def quality_methods(model: str | None, paths: list[str], crops: np.ndarray, identities: np.ndarray,
                    index_rows: dict, sface_embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Every method's quality per crop (higher = better)."""
    from engines.quality import QualityScorer

    scorer = QualityScorer(model)
    methods = {f"model:{scorer.manifest.tag}": scorer.score(crops)}
    methods["random"] = np.random.default_rng(0).random(len(paths))
    if index_rows:
        methods["face_size"] = np.array([index_rows[p].face_px if p in index_rows else np.nan for p in paths])
    methods["detector_score"] = detector_scores(crops)
    methods["sharpness"] = sharpness(crops)
    ids = np.unique(identities, return_inverse=True)[1]
    labels = fast_labels(sface_embeddings, ids, LabelParams()).labels
    methods["pseudo_labels"] = np.nan_to_num(labels, nan=0.0)
    return methods


def _pairs(identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    upper = np.triu_indices(len(identities), 1)
    return np.stack(upper, axis=1), (identities[upper[0]] == identities[upper[1]])


def degradation_response(model: str | None, seed_root: Path) -> dict[str, float]:
    """Mean Spearman correlation between degradation strength (0 = original) and score, per kind.

    Uses the seed set's ``graded`` split: held-out crops in every kind at every level.
    """
    from engines.quality import QualityScorer

    if not (seed_root / "index.csv").is_file():
        return {}
    rows = [r for r in read_index(seed_root) if r.split == "graded"]
    if not rows:
        return {}
    paths = sorted({r.path for r in rows} | {r.original for r in rows})
    scores = QualityScorer(model).score(np.stack([cv2.imread(str(seed_root / p)) for p in paths]))
    score_of = dict(zip(paths, scores, strict=True))
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        key = (row.kind, row.original)
        series.setdefault(key, [(0, score_of[row.original])]).append((row.level, score_of[row.path]))
    per_kind: dict[str, list[float]] = {}
    for (kind, _), points in series.items():
        levels, values = zip(*points, strict=True)
        rho = spearmanr(levels, values).statistic
        per_kind.setdefault(kind, []).append(0.0 if np.isnan(rho) else float(rho))
    return {kind: round(float(np.mean(v)), 4) for kind, v in sorted(per_kind.items())}


def evaluate(data: Path, out: Path, model: str | None = None, recognizers: tuple[str, ...] = RECOGNIZERS,
             cache: Path | None = None, progress: bool = True) -> dict:
    """Run the protocol; write ``out`` (JSON) and a PNG beside it; return the report."""
    cache = cache or cache_root()
    paths, identities, index_rows = load_heldout(data)
    if len(np.unique(identities)) < 2:
        raise DatasetError(f"{data}: evaluation needs at least two held-out identities")
    crops = np.stack([cv2.imread(p) for p in paths])
    if crops.shape[1:3] != (112, 112):
        raise DatasetError(f"{data}: evaluation expects aligned 112×112 crops")
    embeddings = {name: embed_cached(name, paths, crops, cache) for name in recognizers}
    sface = embeddings.get("sface")
    if sface is None:
        sface = embed_cached("sface", paths, crops, cache)
    methods = quality_methods(model, paths, crops, identities, index_rows, sface)
    pairs, mated = _pairs(identities)
    results, curves = [], {}
    for name, vectors in embeddings.items():
        similarity = np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])
        curves[name] = {}
        for method, quality in methods.items():
            pair_quality = np.minimum(quality[pairs[:, 0]], quality[pairs[:, 1]])
            curves[name][method] = {}
            for fmr in FMRS:
                curve = erc_curve(similarity[mated], pair_quality[mated], similarity[~mated],
                                  pair_quality[~mated], fmr)
                curves[name][method][str(fmr)] = [round(float(x), 6) for x in curve]
                results.append({"recognizer": name, "method": method, "fmr": fmr, "auc": round(area(curve), 6),
                                "pauc_0.2": round(area(curve, 0.2), 6), "pauc_0.3": round(area(curve, 0.3), 6)})
    model_key = next(k for k in methods if k.startswith("model:"))
    report = {
        "model": model_key.split(":", 1)[1],
        "data": str(data),
        "crops": len(paths),
        "identities": len(np.unique(identities)),
        "pairs": {"mated": int(mated.sum()), "nonmated": int((~mated).sum())},
        "discard": DISCARD.tolist(),
        "results": results,
        "curves": curves,
        "degradation_response": degradation_response(model, data.parent),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot_erc(report, out.with_suffix(".png"))
    return report


def plot_erc(report: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["curves"])
    fig, axes = plt.subplots(len(names), len(FMRS), figsize=(4.2 * len(FMRS), 3.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, fmr in enumerate(FMRS):
            ax = axes[row][col]
            for method, by_fmr in report["curves"][name].items():
                style = "-" if method.startswith("model:") else "--"
                ax.plot(report["discard"], by_fmr[str(fmr)], style, label=method.replace("model:", ""))
            ax.set(title=f"{name}, FMR={fmr:g}", xlabel="fraction discarded", ylabel="FNMR")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def summary_table(report: dict, fmr: float = 1e-3) -> str:
    """Markdown table of pAUC@0.3 and AUC at one FMR (what the README shows)."""
    lines = ["| recogniser | method | pAUC (u≤0.3) | AUC (u≤0.95) |", "|---|---|---|---|"]
    for row in report["results"]:
        if row["fmr"] == fmr:
            lines.append(f"| {row['recognizer']} | {row['method']} | {row['pauc_0.3']:.4f} | {row['auc']:.4f} |")
    return "\n".join(lines)
