"""Stages 1–4 of ``trainer rebuild``: pseudo-labels, feature cache, fit, export, TensorRT build.

Each stage's result lives in a folder keyed by everything that changes it, so changing
the number of epochs refits without relabelling, and changing the held-out set
re-evaluates without refitting:

- ``rebuild/labels-<key>/``: the datasets' items (keys and stamps), the degraded copies
  (fraction and seed), the label parameters, the recogniser and the embedding store's dtype.
  Written under a temporary name and renamed into place, so it exists only complete.
- ``rebuild/fit-<key>/``: the labels' key, the recipe and the options that change the
  result (:data:`trainer.fit_options.RESULT_FIELDS`). Complete when the last epoch's
  checkpoint and ``fit.json`` are there; a killed fit resumes from its last finished epoch.
- ``rebuild/<key>/``: the fit's key and the held-out set: the model being staged, the
  evaluation, and ``summary.json`` with every stage's wall time, CPU time and peak memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engines.errors import FacegateError
from engines.paths import cache_root
from trainer.checkpoints import write_json_atomically
from trainer.datasets.degraded import DegradeOptions
from trainer.fit_options import PAPER_HEAD, RESULT_FIELDS, FitOptions
from trainer.sddfiqa import LabelParams, RegressorParams
from trainer.stages import StageLog, StageRecord


@dataclass(frozen=True)
class EmbeddingOptions:
    """How stage 1 embeds the training images (passed to ``trainer labels``)."""

    workers: int | None = None  # embedding processes on a CPU
    dtype: str | None = None  # embedding store: float16 or float32
    device: str = "auto"


# Flags of ``trainer labels`` that carry each embedding option, in order of preference.
LABEL_FLAGS = {"workers": ("--workers", "--embed-workers"), "dtype": ("--dtype", "--store-dtype")}


def portable(path: Path) -> str:
    """A path as it reads on any machine: relative to the cache root or to the shared face data
    (``$FACEGATE_FACES``) when inside one of them."""
    from engines.errors import DatasetError
    from trainer.evaluation.heldout import FACES_ENV, faces_root

    resolved = Path(path).resolve()
    for name, root in (("$FACEGATE_CACHE", cache_root), (f"${FACES_ENV}", faces_root)):
        try:
            return f"{name}/{resolved.relative_to(root().resolve())}"
        except (ValueError, DatasetError):
            continue
    return str(path)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_fingerprint(roots: Sequence[Path], progress: bool = False) -> tuple[str, int]:
    """A digest of every item of the datasets (its key and cheap stamp) and their count."""
    from tqdm import tqdm

    from trainer.datasets import open_datasets

    dataset = open_datasets(list(roots))
    digest = hashlib.sha256(json.dumps(dataset.spec(), sort_keys=True, default=str).encode())
    for i in tqdm(range(len(dataset)), desc="dataset fingerprint", unit="item", disable=not progress, leave=False,
                  mininterval=1.0):
        digest.update(f"{dataset.key(i)}\0{dataset.stamp(i)}\n".encode())
    return digest.hexdigest(), len(dataset)


def _labels_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """``trainer labels``'s own parser and the flags it knows (so options pass through as it defines them)."""
    from trainer import labels_cli

    parser = argparse.ArgumentParser(prog="trainer")
    sub = parser.add_subparsers()
    labels_cli.add_parser(sub)
    return parser, set(sub.choices["labels"]._option_string_actions)


class RebuildStages:
    """Runs and measures stages 1–4 of one rebuild; ``log`` holds their records."""

    def __init__(self, roots: Sequence[Path], heldout: Path, label_params: LabelParams,
                 fit_params: RegressorParams, fit_options: FitOptions, embedding: EmbeddingOptions,
                 progress: bool, degrade: DegradeOptions | None = None) -> None:
        self.roots = [Path(r) for r in roots]
        self.degrade = degrade or DegradeOptions()
        self.heldout = Path(heldout)
        self.label_params, self.fit_params, self.fit_options = label_params, fit_params, fit_options
        self.embedding = embedding
        self.progress = progress
        self.log = StageLog()
        self._earlier: list[dict] | None = None
        with self.log.stage("scan datasets") as record:
            fingerprint, items = data_fingerprint(self.roots, progress)
            record.details = {"items": items}
        copies = [asdict(self.degrade)] if self.degrade.enabled else []  # keys of runs without copies stay as they were
        self.labels_key = _key("labels", fingerprint, asdict(label_params), fit_options.recognizer, embedding.dtype,
                               *copies)
        result_options = {k: v for k, v in asdict(fit_options).items() if k in RESULT_FIELDS}
        if result_options.get("head") == PAPER_HEAD:  # keys of runs with the paper's head stay as they were
            del result_options["head"]
        self.fit_key = _key("fit", self.labels_key, asdict(fit_params), result_options)
        self.run_key = _key("run", self.fit_key, str(self.heldout.resolve()))
        base = cache_root() / "rebuild"
        self.labels_dir = base / f"labels-{self.labels_key}"
        self.fit_dir = base / f"fit-{self.fit_key}"
        self.work = base / self.run_key
        self.work.mkdir(parents=True, exist_ok=True)

    def say(self, message: str) -> None:
        if self.progress:
            print(message, flush=True)

    def _finish(self, record: StageRecord) -> None:
        self.log.end(record)
        self.write_summary()

    def write_summary(self, extra: dict | None = None) -> Path:
        """``summary.json`` in the work folder: this run's stages so far, earlier runs', and the keys.

        A resumed rebuild reports reused stages at no cost, so the stages of earlier runs
        of the same work folder stay in ``earlier_runs`` (what a stage really cost is there).
        """
        target = self.work / "summary.json"
        if self._earlier is None:
            try:
                previous = json.loads(target.read_text())
                self._earlier = [*previous.get("earlier_runs", []), {"stages": previous.get("stages", [])}]
            except (OSError, ValueError):
                self._earlier = []
        summary = {"data": [portable(r) for r in self.roots], "heldout": portable(self.heldout),
                   "keys": {"labels": self.labels_key, "fit": self.fit_key, "run": self.run_key},
                   "folders": {"labels": portable(self.labels_dir), "fit": portable(self.fit_dir)},
                   "label_params": asdict(self.label_params), "fit_params": asdict(self.fit_params),
                   "fit_options": asdict(self.fit_options), "embedding": asdict(self.embedding),
                   "degraded_copies": asdict(self.degrade),
                   "stages": self.log.as_json(), **(extra or {}), "earlier_runs": self._earlier}
        return write_json_atomically(summary, target)

    def _labels_args(self, out: Path) -> argparse.Namespace:
        parser, known = _labels_parser()
        p = self.label_params
        argv = ["labels", *[x for root in self.roots for x in ("--data", str(root))], "--out", str(out),
                "--positives", str(p.positives), "--negatives", str(p.negatives), "--repetitions",
                str(p.repetitions), "--seed", str(p.seed), "--negatives-shared-by", p.negatives_shared_by,
                "--device", self.embedding.device]
        if self.degrade.enabled:
            argv += ["--degrade-fraction", str(self.degrade.fraction), "--degrade-seed", str(self.degrade.seed)]
        if p.sign_guard:
            argv.append("--sign-guard")
        if p.clip_percentile is not None:
            argv += ["--clip-percentile", str(p.clip_percentile)]
        for option, flags in LABEL_FLAGS.items():
            value = getattr(self.embedding, option)
            if value is None:
                continue
            flag = next((f for f in flags if f in known), None)
            if flag is None:
                raise FacegateError(f"this `trainer labels` has no option for embedding {option} ({flags[0]})")
            argv += [flag, str(value)]
        if not self.progress:
            argv.append("--quiet")
        return parser.parse_args(argv)

    def labels(self) -> Path:
        """Stage 1: embeddings and pseudo-labels; returns the labels folder."""
        from trainer.labels_cli import run as run_labels

        record = self.log.begin("embeddings + labels")
        done = (self.labels_dir / "labels.csv").is_file() and (self.labels_dir / "summary.json").is_file()
        self.say(f"[1/5] embeddings and pseudo-labels{': reused' if done else ''}")
        if not done:
            for stale in self.labels_dir.parent.glob(f"{self.labels_dir.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)  # what a killed run left half-written
            tmp = self.labels_dir.with_name(f"{self.labels_dir.name}.tmp-{os.getpid()}")
            run_labels(self._labels_args(tmp))
            shutil.rmtree(self.labels_dir, ignore_errors=True)
            tmp.rename(self.labels_dir)
        summary = json.loads((self.labels_dir / "summary.json").read_text())
        record.reused = done
        record.details = {k: summary.get(k) for k in ("images", "labelled", "identities", "seconds")}
        self._finish(record)
        return self.labels_dir

    def fit(self) -> Path:
        """Stage 2: the feature cache (when blocks are frozen) and the fit; returns the last checkpoint."""
        from trainer.fit import LAST, cache_features, fit, load_checkpoint

        last = self.fit_dir / "checkpoints" / LAST
        done = ((self.fit_dir / "fit.json").is_file() and last.is_file()
                and load_checkpoint(last)["epoch"] >= self.fit_params.epochs)
        labels_csv = self.labels_dir / "labels.csv"
        options = self.fit_options
        if not done and options.frozen_blocks and options.feature_cache:
            record = self.log.begin("feature cache")
            self.say(f"[2/5] features of the {options.frozen_blocks} frozen blocks")
            report = cache_features(labels_csv, self.fit_params, options, progress=self.progress)
            record.reused = report.computed == 0
            record.details = asdict(report)
            self._finish(record)
        record = self.log.begin("fit")
        self.say(f"[2/5] fit ({self.fit_params.epochs} epochs, {options.frozen_blocks} blocks frozen)"
                 f"{': reused' if done else ''}")
        if not done:
            fit(labels_csv, self.fit_dir, self.fit_params, options, resume=True, progress=self.progress)
        history = json.loads((self.fit_dir / "fit.json").read_text())["history"]
        record.reused = done
        record.details = {"epochs": len(history), "val_mae": history[-1]["val_mae"],
                          "mean_epoch_seconds": round(sum(h["seconds"] for h in history) / len(history), 2)}
        self._finish(record)
        return last

    def export(self, last: Path, staging: Path, name: str, version: int) -> None:
        """Stage 3: the checkpoint as an ONNX model folder, with what it was trained on."""
        from trainer.export import export_onnx

        record = self.log.begin("export")
        self.say(f"[3/5] export {name}-{version}")
        summary = json.loads((self.labels_dir / "summary.json").read_text())
        training = {"data": [portable(r) for r in self.roots], "images_labelled": summary["labelled"],
                    "identities": summary["identities"], "label_params": summary["params"],
                    "degraded_copies": summary.get("degraded_copies"),
                    "fit_params": asdict(self.fit_params), "fit_options": {
                        k: v for k, v in asdict(self.fit_options).items() if k in RESULT_FIELDS},
                    "history": json.loads((self.fit_dir / "fit.json").read_text())["history"][-1]}
        shutil.rmtree(staging, ignore_errors=True)
        export_onnx(last, staging, name, str(version), training=training)
        self._finish(record)

    def build(self, staging: Path) -> str:
        """Stage 4: a TensorRT plan where TensorRT and a GPU exist; returns why not otherwise."""
        from engines.build import build_unavailable_reason

        record = self.log.begin("tensorrt build")
        self.say("[4/5] TensorRT build")
        note = build_unavailable_reason() or ""
        if not note:
            from trainer.build import build_model

            try:
                build_model(str(staging))
            except FacegateError as exc:
                note = str(exc)
        self.say(f"      skipped: {note}" if note else "      built")
        record.details = {"skipped": note} if note else {}
        self._finish(record)
        return note
