"""``trainer fit | export | build | evaluate | score``: the model half of the pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from engines.errors import DatasetError, FacegateError
from trainer.fit_options import HEADS, NORM_HEAD, PAPER_HEAD, FitOptions
from trainer.sddfiqa import RegressorParams


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="train the quality regressor on pseudo-labels",
                         description="SDD-FIQA regressor: SFace-initialised MobileFaceNet, Huber loss, Adam, "
                         "step schedule, horizontal flip; checkpoints every epoch (atomically; --resume continues). "
                         "Runs under torchrun on several processes, GPUs or machines (DistributedDataParallel; "
                         "--batch-size is the global batch).",
                         epilog="Cut points (--freeze-blocks): 0 trains everything (the reference); 24 or "
                         "pair12-dw freezes up to the 12th pair's depthwise conv (features 512x7x7); 25 or pair12 "
                         "up to the 12th pair (1024x7x7); 27 or backbone freezes the whole backbone (head only). "
                         "Example: torchrun --nproc_per_node 8 -m trainer.cli fit --labels L --out RUN")
    fit.add_argument("--labels", type=Path, required=True, help="labels.csv from `trainer labels`")
    fit.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, curves)")
    add_fit_options(fit)
    fit.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda")
    fit.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    fit.add_argument("--quiet", action="store_true")
    fit.set_defaults(func=run_fit)

    export = sub.add_parser("export", help="checkpoint → ONNX model folder with manifest")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="model folder to write")
    export.add_argument("--name", default="sddfiqa-mfn")
    export.add_argument("--version", required=True)
    export.set_defaults(func=run_export)

    build = sub.add_parser("build", help="TensorRT engine for a model folder (needs TensorRT and a GPU)")
    build.add_argument("--model", default=None, help="model folder or name (default: current quality model)")
    build.add_argument("--precision", choices=("fp16", "fp32", "tf32"), default="fp16",
                       help="fp16 (default); fp32 computes in fp32 (TF32 off); tf32 lets FP32 layers use TF32")
    build.add_argument("--max-batch", type=int, default=64)
    build.set_defaults(func=run_build)

    evaluate = sub.add_parser(
        "evaluate", help="error-versus-reject evaluation against every baseline, with bootstrap intervals",
        description="Error-versus-reject on all pairs of a held-out set (SFace and dlib), the model beside "
        "random, face size, detector score, sharpness, SFace's embedding norm, qualityface, other quality "
        "models and the pseudo-labels (oracle); 95% bootstrap intervals over identities; a threshold table; "
        "the degradation response; the ship criteria. Writes a JSON report and figures beside it.")
    evaluate.add_argument("--model", default=None, help="model folder or name (default: current)")
    evaluate.add_argument("--suite", default=None,
                          help="held-out sets, comma-separated, the first being the main one: seed (default; "
                          "fast), pins, pins-degraded; 'all' = pins,seed,pins-degraded")
    evaluate.add_argument("--data", type=Path, default=None,
                          help="a folder of aligned held-out crops in identity folders (the main set; "
                          "--suite sets are added after it)")
    evaluate.add_argument("--compare", default=None,
                          help="other quality models to put beside it, comma-separated (default: "
                          "sddfiqa-mfn-1 and the current model)")
    evaluate.add_argument("--recognizers", default="sface,dlib-resnet")
    evaluate.add_argument("--bootstrap", type=int, default=None, metavar="N",
                          help="bootstrap replicates over identities (default 1000; 0: no intervals)")
    evaluate.add_argument("--no-degradation", action="store_true", help="skip the degradation ladder")
    evaluate.add_argument("--out", type=Path, required=True, help="report JSON (figures are written beside it)")
    evaluate.add_argument("--manifest", action="store_true",
                          help="also write the evaluation block (thresholds, claims) into the model's manifest.json")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(func=run_evaluate)

    score = sub.add_parser("score", help="detect, align and score every face in images or videos")
    score.add_argument("paths", nargs="+", type=Path)
    score.add_argument("--json", action="store_true", help="one JSON object per face and line")
    score.add_argument("--model", default=None)
    score.add_argument("--every", type=int, default=25, help="videos: score every n-th frame")
    score.set_defaults(func=run_score)


def frozen_blocks(value: str) -> int:
    """``--freeze-blocks``: a number of blocks or a named cut point."""
    from trainer.quality_model import BLOCKS, NAMED_CUTS

    if value in NAMED_CUTS:
        return NAMED_CUTS[value]
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0..{BLOCKS} or one of {', '.join(NAMED_CUTS)}") from None
    if not 0 <= number <= BLOCKS:
        raise argparse.ArgumentTypeError(f"expected 0..{BLOCKS} or one of {', '.join(NAMED_CUTS)}")
    return number


def add_fit_options(parser: argparse.ArgumentParser, reference_defaults: bool = True) -> None:
    """The training recipe's options, shared by ``trainer fit`` and ``trainer rebuild``.

    With ``reference_defaults`` False every default is None (``rebuild`` then keeps the reference).
    """
    ref, ours = RegressorParams(), FitOptions()

    def default(value):
        return value if reference_defaults else None

    parser.add_argument("--epochs", type=int, default=default(ref.epochs), help=f"default {ref.epochs}")
    parser.add_argument("--lr", type=float, default=default(ref.learning_rate), help=f"default {ref.learning_rate}")
    parser.add_argument("--lr-milestones", default=default(",".join(map(str, ref.lr_milestones))),
                        help="epochs at which the learning rate is multiplied by 0.1 "
                        f"(default {','.join(map(str, ref.lr_milestones))})")
    parser.add_argument("--weight-decay", type=float, default=default(ref.weight_decay),
                        help=f"default {ref.weight_decay}")
    parser.add_argument("--dropout", type=float, default=default(ref.dropout), help=f"default {ref.dropout}")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    parser.add_argument("--batch-size", type=int, default=ours.batch_size,
                        help="global batch, split evenly over torchrun's processes")
    parser.add_argument("--val-fraction", type=float, default=ours.val_fraction,
                        help="share of labelled images kept for validation")
    parser.add_argument("--seed", type=int, default=ours.seed)
    parser.add_argument("--freeze-blocks", type=frozen_blocks, default=ours.frozen_blocks, metavar="K",
                        help="freeze the first K conv blocks (0: train all, the reference; or pair12-dw, pair12, "
                        "backbone)")
    parser.add_argument("--head", choices=HEADS, default=ours.head,
                        help=f"quality head: {PAPER_HEAD} (the paper's) or {NORM_HEAD} (the paper's plus a trained "
                        f"weight on SFace's embedding length; default {ours.head})")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="with frozen blocks: run them on every step instead of caching their features")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache root (default $FACEGATE_CACHE/features)")
    parser.add_argument("--cache-batch", type=int, default=ours.cache_batch, help="images per feature-cache batch")
    parser.add_argument("--cache-shard-images", type=int, default=ours.cache_shard_images,
                        help="images per feature-cache shard (the unit a killed build loses)")
    parser.add_argument("--workers", type=int, default=ours.workers,
                        help="DataLoader processes reading images or cached features (0: in the training process)")
    parser.add_argument("--no-sync-bn", action="store_true",
                        help="several GPU processes: keep BatchNorm statistics per process")


def fit_recipe(args: argparse.Namespace) -> tuple[RegressorParams, FitOptions]:
    """The recipe the options describe (options left at None keep the reference value)."""
    ref = RegressorParams()

    def pick(value, fallback):
        return fallback if value is None else value

    milestones = pick(args.lr_milestones, None)
    params = replace(ref, epochs=pick(args.epochs, ref.epochs), learning_rate=pick(args.lr, ref.learning_rate),
                     weight_decay=pick(args.weight_decay, ref.weight_decay), dropout=pick(args.dropout, ref.dropout),
                     horizontal_flip=not args.no_flip,
                     lr_milestones=ref.lr_milestones if milestones is None
                     else tuple(int(x) for x in milestones.split(",") if x))
    options = FitOptions(batch_size=args.batch_size, val_fraction=args.val_fraction, seed=args.seed,
                         device=getattr(args, "device", "auto"), frozen_blocks=args.freeze_blocks, head=args.head,
                         feature_cache=not args.no_feature_cache,
                         cache_dir=str(args.cache_dir) if args.cache_dir else None, cache_batch=args.cache_batch,
                         cache_shard_images=args.cache_shard_images,
                         workers=args.workers, sync_batchnorm=not args.no_sync_bn)
    return params, options


def run_fit(args: argparse.Namespace) -> int:
    from trainer.fit import fit

    params, options = fit_recipe(args)
    last = fit(args.labels, args.out, params, options, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"fit: checkpoint {last}; curves {args.out / 'training_curves.png'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from trainer.export import export_onnx

    manifest = export_onnx(args.checkpoint, args.out, args.name, args.version)
    print(f"export: {args.out / 'model.onnx'} ({manifest.tag}, sha256 {manifest.sha256[:12]}…)")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from trainer.build import build_model

    try:
        plan = build_model(args.model, args.precision, args.max_batch)
    except FacegateError as exc:
        print(f"trainer build: {exc}; the ONNX model stays usable on ONNX Runtime", file=sys.stderr)
        return 3
    print(f"build: {plan.path} ({plan.precision}, TensorRT {plan.tensorrt_version}, {plan.gpu}, "
          f"compute capability {plan.compute_capability})")
    return 0


def _evaluation_sets(args: argparse.Namespace) -> list[str | Path]:
    from trainer.evaluation.heldout import SUITES

    names = [] if args.suite is None else [n for n in args.suite.split(",") if n]
    if names == ["all"]:
        names = ["pins", "seed", "pins-degraded"]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise DatasetError(f"unknown held-out suite {', '.join(unknown)}; known: {', '.join(SUITES)}, all")
    sets: list[str | Path] = [args.data] if args.data else []
    return sets + names or ["seed"]


def run_evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate, summary
    from trainer.evaluation.bootstrap import REPLICATES

    sets = _evaluation_sets(args)
    compare = None if args.compare is None else tuple(m for m in args.compare.split(",") if m)
    report = evaluate(sets[0], args.out, args.model, tuple(r for r in args.recognizers.split(",") if r),
                      progress=not args.quiet, also=tuple(sets[1:]), compare=compare,
                      replicates=REPLICATES if args.bootstrap is None else args.bootstrap,
                      degradation=not args.no_degradation)
    print(summary(report))
    if args.manifest:
        from trainer.evaluation.model_card import write_evaluation

        folder = write_evaluation(args.model, report)
        print(f"manifest: {folder / 'manifest.json'} (evaluation block)")
    print(f"report: {args.out}  figures: {args.out.with_suffix('.png')} and {args.out.stem}-*.png beside it")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from engines.alignment import align_faces
    from engines.detector import Detector
    from engines.errors import ImageReadError
    from engines.imageio import IMAGE_SUFFIXES, read_image
    from engines.quality import QualityScorer
    from trainer.videos import VIDEO_SUFFIXES, sampled_frames

    detector, scorer = Detector(max_side=1280), QualityScorer(args.model)
    failures = 0
    for path in args.paths:
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                frames = list(sampled_frames(path, args.every))
            elif path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
                frames = [(None, read_image(path))]
            else:
                raise DatasetError(f"{path} does not exist")
        except (ImageReadError, DatasetError) as exc:
            failures += 1
            print(json.dumps({"path": str(path), "error": str(exc)}) if args.json else f"{path}: {exc}",
                  file=sys.stdout if args.json else sys.stderr)
            continue
        for frame_index, image in frames:
            faces = detector.detect(image)
            scores = scorer.score(align_faces(image, faces.landmarks_px)) if len(faces) else np.zeros(0)
            if not len(faces) and not args.json:
                print(f"{path}{'' if frame_index is None else f'#{frame_index}'}: no face")
            for i in range(len(faces)):
                record = {"path": str(path), "frame": frame_index,
                          "bbox": [round(float(v), 1) for v in faces.boxes_px[i]],
                          "det_score": round(float(faces.scores[i]), 4), "quality": round(float(scores[i]), 2),
                          "model": scorer.manifest.tag}
                if args.json:
                    print(json.dumps(record))
                else:
                    where = "" if frame_index is None else f"#{frame_index}"
                    print(f"{path}{where}: face {i} at {record['bbox']} quality {record['quality']:.1f}")
    return 1 if failures and failures == len(args.paths) else 0
