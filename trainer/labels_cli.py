"""``trainer labels`` and ``trainer embed``: datasets → embedding store → SDD-FIQA pseudo-labels.

``trainer embed`` fills (or resumes) the embedding store of one or more datasets; run it
under ``torchrun`` to embed with one process per GPU. ``trainer labels`` embeds what is
missing, then computes the labels from the store in bounded memory and writes
``labels.csv`` (one row per usable image), ``summary.json`` (parameters, datasets, counts,
what was skipped and why) and ``histogram.png`` into the output folder.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.errors import DatasetError
from trainer.datasets.degraded import DegradeOptions
from trainer.distributed import rank_world
from trainer.labels import LabelResult, fast_labels, reference_labels
from trainer.labels_io import read_labels, write_labels
from trainer.sddfiqa import LabelParams
from trainer.store import write_json_atomic

__all__ = ["add_parser", "read_labels", "run"]
SCATTER_POINTS = 200_000
DATA_HELP = ("a dataset: identity folders ROOT/<identity>/<image>, a list file ('path identity' per line) or an "
             "InsightFace RecordIO folder (train.rec, train.idx). Repeat for several roots: identities of different "
             "roots never merge, names are prefixed by the root's name")


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, default=None,
                   help="embedding store folder (default: under the cache, one per recogniser and dataset roots)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored embedding precision")
    p.add_argument("--workers", type=int, default=None,
                   help="embedding processes on CPU, one ONNX Runtime thread each (default: the CPU count)")
    p.add_argument("--shard-size", type=int, default=None,
                   help="images per shard, the unit of resuming (default: 4096, less for small sets)")
    p.add_argument("--cache", type=Path, default=None, help="cache root (default: $FACEGATE_CACHE)")
    p.add_argument("--degrade-fraction", type=float, default=0.0, metavar="F",
                   help="add one realistic degraded copy (blur, downscale, JPEG, noise, occlusion, under- or "
                   "over-exposure, mild to severe) of this fraction of the images, each in its original's "
                   "identity; deterministic (default 0: none)")
    p.add_argument("--degrade-seed", type=int, default=0, metavar="S",
                   help="which images get a copy, and which degradation (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``labels`` and ``embed``."""
    defaults = LabelParams()
    p = sub.add_parser(
        "labels",
        help="compute SDD-FIQA quality pseudo-labels for one or more face datasets",
        description="Quality pseudo-label of each image: the Wasserstein distance between its "
        "similarities to same-identity images (Pos-Sim) and to other identities (Neg-Sim), "
        "min-max scaled to 0..100 per repetition and averaged (SDD-FIQA, CVPR 2021). "
        "Embeds what the store lacks first (resumable), then labels from the store.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, action="append", help=DATA_HELP)
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
    _store_options(p)
    p.set_defaults(func=run)

    e = sub.add_parser(
        "embed",
        help="embed one or more face datasets into a resumable embedding store",
        description="Recognition embeddings of every image, written shard by shard into one memory-mapped "
        "array (float16 by default); a re-run embeds only the shards not yet done. Several worker processes "
        "on CPU; under torchrun, one process per GPU (rank r takes shards r, r+world, ...).",
    )
    e.add_argument("--data", type=Path, action="append", required=True, help=DATA_HELP)
    e.add_argument("--device", default="auto", help="auto (the rank's GPU under torchrun when present), cpu, cuda")
    _store_options(e)
    e.set_defaults(func=run_embed)


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


@dataclass
class LabelInput:
    """What labels are computed from: embeddings (an array or a memory-mapped store) and names."""

    embeddings: np.ndarray
    identity: np.ndarray  # int, index into ``names``
    names: list[str]
    usable: np.ndarray | None
    key: Callable[[int], str]
    path: Callable[[int], str]
    skipped: list[tuple[str, str]]
    model: str
    data: dict | None
    store: str | None = None
    degraded_copies: dict | None = None  # what DegradedCopies added (None: no copies)


def degrade_options(args: argparse.Namespace) -> DegradeOptions:
    return DegradeOptions(getattr(args, "degrade_fraction", 0.0) or 0.0, getattr(args, "degrade_seed", 0) or 0)


def _embed(args: argparse.Namespace):
    from engines.embedder import DEFAULT_RECOGNIZER
    from engines.modelfiles import load_model
    from trainer.datasets import open_datasets, with_degraded_copies
    from trainer.embed import default_store_dir, embed_to_store

    base = open_datasets(_roots(args.data))
    dataset = with_degraded_copies(base, degrade_options(args))
    store = getattr(args, "store", None)
    if store is None and dataset is not base:
        # The base roots' own store folder: a run with another fraction (or none) then finds the
        # originals and the shared copies there by content and embeds only what is new.
        store = default_store_dir(base, load_model(DEFAULT_RECOGNIZER)[0].tag.replace("@", "-"),
                                  getattr(args, "dtype", "float16"), args.cache)
    run = embed_to_store(dataset, store, cache=args.cache,
                         dtype=getattr(args, "dtype", "float16"), shard_size=getattr(args, "shard_size", None),
                         workers=getattr(args, "workers", None), device=getattr(args, "device", "auto"),
                         progress=not args.quiet)
    return dataset, run


def _from_store(folder: Path, dataset=None) -> LabelInput:
    from trainer.datasets import open_spec
    from trainer.store import EmbeddingStore

    store = EmbeddingStore(folder, "r")
    done = store.done_shards()
    if done < store.meta.shards:
        raise DatasetError(f"embedding store {folder} is incomplete: {done} of {store.meta.shards} shards done; "
                           "finish it with trainer embed --data … --store …")
    if dataset is None and store.meta.data:
        dataset = open_spec(store.meta.data)
    if dataset is not None and len(dataset) != store.meta.n:
        raise DatasetError(f"embedding store {folder} holds {store.meta.n} rows, its dataset now {len(dataset)}: "
                           "embed again (trainer embed --data …)")
    skipped = list(dataset.skipped if dataset else [])
    skipped += [(dataset.path(r) if dataset else f"#{r}", reason) for r, reason in store.failures()]
    return LabelInput(store.embeddings, np.asarray(store.identity), store.identity_names(), store.usable,
                      dataset.key if dataset else (lambda i: f"#{i}"), dataset.path if dataset else (lambda i: f"#{i}"),
                      skipped, store.meta.recognizer, store.meta.data, str(folder))


def _load(args: argparse.Namespace) -> LabelInput:
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
        names, identity = np.unique(np.asarray(identities), return_inverse=True)
        return LabelInput(embeddings.astype(np.float32), identity, [str(n) for n in names], None,
                          paths.__getitem__, paths.__getitem__, [], f"precomputed:{args.embeddings.name}", None)
    if args.data:
        dataset, run = _embed(args)
        source = _from_store(run.store_dir, dataset)
        source.degraded_copies = dataset.describe() if hasattr(dataset, "describe") else None
        return source
    if getattr(args, "store", None) is not None:
        return _from_store(args.store)
    raise DatasetError("give --data (one or more datasets), --embeddings with --identities, or --store")


def check_usable(identity: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """Images per identity (usable rows); DatasetError unless two identities and one with two images exist."""
    counts = np.bincount(identity[usable] if usable is not None else identity)
    present = counts[counts > 0]
    if len(present) < 2 or int((present >= 2).sum()) < 1:
        raise DatasetError(
            f"pseudo-labels need at least two identities and one with two or more usable images; "
            f"found {len(present)} identities, {int((present >= 2).sum())} with two or more"
        )
    return counts


def plot_histogram(out: Path, result: LabelResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result.labels[result.labelled]
    shown = np.random.default_rng(0).permutation(len(labels))[:SCATTER_POINTS]  # millions of points draw slowly
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.hist(labels, bins=40, color="#3b7dd8")
    ax1.set(title="SDD-FIQA pseudo-labels", xlabel="label (0..100)", ylabel="images")
    ax2.scatter(result.mean_neg_sim[result.labelled][shown], result.mean_pos_sim[result.labelled][shown],
                c=labels[shown], s=6 if len(shown) < 20_000 else 1, cmap="viridis")
    ax2.set(title="mean similarities (colour: label)", xlabel="mean Neg-Sim", ylabel="mean Pos-Sim")
    fig.tight_layout()
    target = out / "histogram.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def run_embed(args: argparse.Namespace) -> int:
    _, run = _embed(args)
    if rank_world()[0] == 0:
        print(f"embed: {run.embedded} embedded, {run.reused} reused, {run.failed} not usable, "
              f"{run.shards_done_before} shards already done; {run.images_per_s:.1f} images/s -> {run.store_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    params = LabelParams(
        positives=args.positives, negatives=args.negatives, repetitions=args.repetitions, seed=args.seed,
        negatives_shared_by=args.negatives_shared_by, sign_guard=args.sign_guard,
        clip_percentile=args.clip_percentile,
    )
    source = _load(args)
    if rank_world()[0] != 0:
        return 0  # under torchrun, the other ranks only embed
    counts = check_usable(source.identity, source.usable)
    from tqdm import tqdm

    started = time.perf_counter()
    if args.implementation == "reference":
        rows = _usable_rows(source)
        with tqdm(total=params.repetitions, desc="labels (reference)", unit="rep", disable=args.quiet) as bar:
            part = reference_labels(np.asarray(source.embeddings[rows], np.float32), source.identity[rows], params,
                                    progress=bar.update)
        result = _expand(part, rows, len(source.identity))
    else:
        with tqdm(total=int(counts.sum()), desc="labels", unit="img", disable=args.quiet) as bar:
            result = fast_labels(source.embeddings, source.identity, params, progress=bar.update,
                                 device=getattr(args, "device", "auto"), usable=source.usable, keep_distances=False)
        rows = _usable_rows(source)  # made after the labels, whose working set is the peak
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labels.csv").unlink(missing_ok=True)  # never beside a summary of another run
    names = source.names
    plot_histogram(args.out, result)
    singletons = sorted(names[k] for k in np.nonzero(counts == 1)[0])
    labels = result.labels[result.labelled]
    summary = {
        "params": asdict(params),
        "implementation": args.implementation,
        "recognizer": source.model,
        "data": source.data,
        "store": source.store,
        "images": len(rows),
        "labelled": int(result.labelled.sum()),
        "identities": int((counts > 0).sum()),
        "one_image_identities": singletons,
        "degraded_copies": source.degraded_copies,
        "skipped": [{"path": p, "reason": r} for p, r in source.skipped],
        "label_stats": {"mean": float(labels.mean()), "std": float(labels.std()),
                        "min": float(labels.min()), "max": float(labels.max())},
        "seconds": round(seconds, 3),
    }
    write_json_atomic(args.out / "summary.json", summary, indent=2)
    # labels.csv last, by rename: its presence means the whole output is there (rebuild relies on it).
    write_labels(args.out / "labels.csv", (
        (source.key(i), source.path(i), names[source.identity[i]],
         *((result.labels[i], result.mean_pos_sim[i], result.mean_neg_sim[i], result.n_pos[i])
           if result.labelled[i] else (None, None, None, 0)))
        for chunk in range(0, len(rows), 65536) for i in rows[chunk : chunk + 65536].tolist()))
    print(f"labels: {summary['labelled']} of {summary['images']} images labelled "
          f"({summary['identities']} identities) in {seconds:.2f}s -> {args.out / 'labels.csv'}")
    if singletons:
        print(f"  {len(singletons)} one-image identities got no label (negatives only): "
              f"{', '.join(singletons[:5])}{' …' if len(singletons) > 5 else ''}")
    skipped = source.skipped
    if skipped:
        print(f"  {len(skipped)} images skipped (listed in summary.json), e.g. {skipped[0][0]}: {skipped[0][1]}")
    return 0


def _usable_rows(source: LabelInput) -> np.ndarray:
    return np.arange(len(source.identity)) if source.usable is None else np.nonzero(source.usable)[0]


def _expand(part: LabelResult, rows: np.ndarray, n: int) -> LabelResult:
    """A result over ``rows`` spread to all ``n`` rows (NaN / unlabelled elsewhere)."""

    def spread(values: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((*values.shape[:-1], n), fill, dtype=values.dtype)
        out[..., rows] = values
        return out

    return LabelResult(spread(part.labels, np.nan), spread(part.mean_pos_sim, np.nan),
                       spread(part.mean_neg_sim, np.nan), spread(part.n_pos, 0), spread(part.labelled, False),
                       spread(part.distances, np.nan))
