"""``trainer labels``: a dataset (or precomputed embeddings) → SDD-FIQA pseudo-labels.

Writes ``labels.csv`` (one row per image), ``summary.json`` (parameters, counts, what
was skipped and why) and ``histogram.png`` into the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engines.errors import DatasetError
from trainer.labels import LabelResult, fast_labels, reference_labels
from trainer.labels_io import read_labels, write_labels
from trainer.sddfiqa import LabelParams

__all__ = ["add_parser", "read_labels", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = LabelParams()
    p = sub.add_parser(
        "labels",
        help="compute SDD-FIQA quality pseudo-labels for one or more face datasets",
        description="Quality pseudo-label of each image: the Wasserstein distance between its "
        "similarities to same-identity images (Pos-Sim) and to other identities (Neg-Sim), "
        "min-max scaled to 0..100 per repetition and averaged (SDD-FIQA, CVPR 2021).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, action="append",
                        help="a dataset: identity folders ROOT/<identity>/<image>, a list file ('path identity' "
                        "per line) or an InsightFace RecordIO folder (train.rec, train.idx). Repeat for several "
                        "roots: identities of different roots never merge, names are prefixed by the root's name")
    source.add_argument("--embeddings", type=Path, help="precomputed N×D embeddings (.npy)")
    p.add_argument("--identities", type=Path,
                   help="with --embeddings: text file, one identity per line (or 'path<TAB>identity')")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--positives", type=int, default=defaults.positives, help="max positives per image")
    p.add_argument("--negatives", type=int, default=defaults.negatives, help="negatives per image")
    p.add_argument("--repetitions", type=int, default=defaults.repetitions, help="draws averaged")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--negatives-shared-by", choices=("identity", "image"), default=defaults.negatives_shared_by,
                   help="identity: one negative draw per identity and repetition (fast, same per-image "
                   "distribution); image: independent per image, as the official script")
    p.add_argument("--sign-guard", action="store_true",
                   help="departure: mean Pos-Sim below mean Neg-Sim gets the lowest label")
    p.add_argument("--clip-percentile", type=float, default=None,
                   help="departure: clip distances to [p, 100-p] percentiles before min-max")
    p.add_argument("--implementation", choices=("fast", "reference"), default="fast",
                   help="reference: per-image scipy loop (slow; for checking)")
    p.add_argument("--device", default="auto",
                   help="similarity products: auto (a CUDA GPU through torch when present), numpy, cuda, cpu")
    p.add_argument("--cache", type=Path, default=None, help="cache root for embeddings")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _read_identities(path: Path, n: int) -> tuple[list[str], list[str]]:
    lines = [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != n:
        raise DatasetError(f"{path} lists {len(lines)} identities for {n} embeddings")
    paths, identities = [], []
    for number, line in enumerate(lines):
        name, tab, identity = line.partition("\t")
        paths.append(name if tab else f"#{number}")
        identities.append(identity if tab else name)
    return paths, identities


def _roots(data: Path | list[Path]) -> list[Path]:
    return list(data) if isinstance(data, list | tuple) else [data]


def _load(args: argparse.Namespace) -> tuple[np.ndarray, list[str], list[str], list[str], list[tuple[str, str]],
                                          str, dict | None]:
    """Embeddings, keys, paths, identities, skipped, recogniser and dataset spec of the input."""
    if args.embeddings is not None:
        if args.identities is None:
            raise DatasetError("--embeddings needs --identities (one identity per embedding)")
        try:
            embeddings = np.load(args.embeddings, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read embeddings {args.embeddings}: {exc}") from None
        if embeddings.ndim != 2:
            raise DatasetError(f"{args.embeddings} must hold an N×D array, not shape {embeddings.shape}")
        paths, identities = _read_identities(args.identities, len(embeddings))
        return (embeddings.astype(np.float32), paths, paths, identities, [],
                f"precomputed:{args.embeddings.name}", None)
    from trainer.datasets import open_datasets
    from trainer.embed import embed_dataset

    dataset = open_datasets(_roots(args.data))
    embedded = embed_dataset(dataset, cache_dir=args.cache, progress=not args.quiet)
    return (embedded.embeddings, embedded.keys, embedded.paths, embedded.identities, embedded.skipped,
            embedded.model, dataset.spec())


def check_usable(identities: list[str]) -> None:
    """Raise DatasetError unless at least two identities and one with two images exist."""
    names, counts = np.unique(np.asarray(identities), return_counts=True)
    if len(names) < 2 or int((counts >= 2).sum()) < 1:
        raise DatasetError(
            f"pseudo-labels need at least two identities and one with two or more usable images; "
            f"found {len(names)} identities, {int((counts >= 2).sum())} with two or more"
        )


def plot_histogram(out: Path, result: LabelResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result.labels[result.labelled]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.hist(labels, bins=40, color="#3b7dd8")
    ax1.set(title="SDD-FIQA pseudo-labels", xlabel="label (0..100)", ylabel="images")
    ax2.scatter(result.mean_neg_sim[result.labelled], result.mean_pos_sim[result.labelled], c=labels, s=6,
                cmap="viridis")
    ax2.set(title="mean similarities (colour: label)", xlabel="mean Neg-Sim", ylabel="mean Pos-Sim")
    fig.tight_layout()
    target = out / "histogram.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def run(args: argparse.Namespace) -> int:
    params = LabelParams(
        positives=args.positives, negatives=args.negatives, repetitions=args.repetitions, seed=args.seed,
        negatives_shared_by=args.negatives_shared_by, sign_guard=args.sign_guard,
        clip_percentile=args.clip_percentile,
    )
    embeddings, keys, paths, identities, skipped, model, data_spec = _load(args)
    check_usable(identities)
    from tqdm import tqdm

    started = time.perf_counter()
    if args.implementation == "reference":
        with tqdm(total=params.repetitions, desc="labels (reference)", unit="rep", disable=args.quiet) as bar:
            result = reference_labels(embeddings, np.asarray(identities), params, progress=bar.update)
    else:
        with tqdm(total=len(identities), desc="labels", unit="img", disable=args.quiet) as bar:
            result = fast_labels(embeddings, np.asarray(identities), params, progress=bar.update,
                                 device=getattr(args, "device", "auto"))
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    write_labels(args.out / "labels.csv", (
        (key, path, identity, *((result.labels[i], result.mean_pos_sim[i], result.mean_neg_sim[i], result.n_pos[i])
                                if result.labelled[i] else (None, None, None, 0)))
        for i, (key, path, identity) in enumerate(zip(keys, paths, identities, strict=True))))
    plot_histogram(args.out, result)
    names, counts = np.unique(np.asarray(identities), return_counts=True)
    singletons = sorted(str(n) for n, c in zip(names, counts, strict=True) if c == 1)
    labels = result.labels[result.labelled]
    summary = {
        "params": asdict(params),
        "implementation": args.implementation,
        "recognizer": model,
        "data": data_spec,
        "images": len(identities),
        "labelled": int(result.labelled.sum()),
        "identities": len(names),
        "one_image_identities": singletons,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "label_stats": {"mean": float(labels.mean()), "std": float(labels.std()),
                        "min": float(labels.min()), "max": float(labels.max())},
        "seconds": round(seconds, 3),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"labels: {summary['labelled']} of {summary['images']} images labelled "
          f"({len(names)} identities) in {seconds:.2f}s -> {args.out / 'labels.csv'}")
    if singletons:
        print(f"  {len(singletons)} one-image identities got no label (negatives only): "
              f"{', '.join(singletons[:5])}{' …' if len(singletons) > 5 else ''}")
    if skipped:
        print(f"  {len(skipped)} images skipped (listed in summary.json), e.g. {skipped[0][0]}: {skipped[0][1]}")
    return 0
