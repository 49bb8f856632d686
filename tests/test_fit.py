"""Fitting with frozen backbone blocks, the feature cache, and resuming after a real kill."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.errors import FacegateError
from engines.modelfiles import load_model
from tests.support.training import (
    file_identity,
    kill,
    state_difference,
    trainer_command,
    write_labels_csv,
)
from tests.support.waiting import wait_for
from trainer.fit_options import FitOptions
from trainer.sddfiqa import RegressorParams


@pytest.fixture(scope="module")
def labelled(seed_set, tmp_path_factory) -> tuple[Path, list[str]]:
    """A labels file over 40 real seed crops (labels: a fixed function of each image)."""
    target = tmp_path_factory.mktemp("labelled") / "labels.csv"
    return target, write_labels_csv(seed_set, target, 40)


@pytest.fixture(scope="module")
def sface_regressor():
    from trainer.mobilefacenet import load_sface_weights
    from trainer.quality_model import QualityRegressor

    model = QualityRegressor()
    load_sface_weights(model.backbone, load_model("sface-2021dec")[1])
    return model.eval()


def _crops(paths: list[str]) -> np.ndarray:
    return np.stack([cv2.imread(p) for p in paths])


def test_cut_points_split_the_model_exactly(sface_regressor, labelled):
    from trainer.quality_model import BLOCKS, NAMED_CUTS, TrainablePart, crops_to_tensor, cut_shape

    assert NAMED_CUTS == {"pair12-dw": 24, "pair12": 25, "backbone": BLOCKS} and BLOCKS == 27
    assert cut_shape(24) == (512, 7, 7) and cut_shape(25) == cut_shape(27) == (1024, 7, 7)
    x = crops_to_tensor(_crops(labelled[1][:6]))
    with torch.no_grad():
        whole = sface_regressor(x)
        for cut in (0, 1, 13, 24, 25, 27):
            features = sface_regressor.front(x, cut)
            assert tuple(features.shape[1:]) == cut_shape(cut)
            part = TrainablePart(sface_regressor, cut).eval()
            torch.testing.assert_close(part(features), whole, rtol=1e-5, atol=1e-4)


def test_cached_features_are_the_frozen_blocks_in_both_orientations(sface_regressor, labelled, tmp_path):
    from trainer.distributed import start_world
    from trainer.feature_cache import FeatureStore, FrontRunner, build_cache, content_keys
    from trainer.fit_data import open_labelled_images
    from trainer.quality_model import crops_to_tensor

    labels = tmp_path / "labels.csv"
    labels.write_text("".join(labelled[0].read_text().splitlines(keepends=True)[:13]))  # 12 images
    images = open_labelled_images(labels)
    subset = list(range(6))
    world = start_world("cpu")
    store = FeatureStore(tmp_path / "features", "sface-test", 24)
    keys = content_keys(images, progress=False)
    report = build_cache(images, keys, store, FrontRunner(sface_regressor, 24, world), world, batch_size=4,
                         shard_images=8, progress=False)
    assert report.computed == len(images) and report.reused == 0
    assert len(images) == 12 and len(store.shards) == 2
    rows = store.rows(keys)
    crops = _crops([images.names[j] for j in subset])
    with torch.no_grad():
        plain = sface_regressor.front(crops_to_tensor(crops), 24).numpy()
        mirrored = sface_regressor.front(crops_to_tensor(crops[:, :, ::-1]), 24).numpy()
    cached = np.stack([[rows.get(j, 0), rows.get(j, 1)] for j in subset]).astype(np.float32)
    scale = np.abs(plain).max()
    assert np.abs(cached[:, 0] - plain).max() < 2e-3 * scale  # float16 storage, ONNX Runtime vs torch
    assert np.abs(cached[:, 1] - mirrored).max() < 2e-3 * scale
    # The mirror image's features are not the mirrored features: both must be stored.
    assert np.abs(mirrored - plain[..., ::-1]).max() > 0.1 * scale
    again = build_cache(images, keys, FeatureStore(tmp_path / "features", "sface-test", 24),
                        FrontRunner(sface_regressor, 24, world), world, progress=False)
    assert again.computed == 0 and again.reused == len(images)


def test_frozen_blocks_stay_fixed_and_cached_training_matches_running_them(labelled, sface_regressor, tmp_path):
    from trainer.fit import fit, load_checkpoint
    from trainer.quality_model import QualityRegressor, crops_to_tensor

    labels = tmp_path / "labels.csv"
    labels.write_text("".join(labelled[0].read_text().splitlines(keepends=True)[:17]))  # 16 images
    params = replace(RegressorParams(), epochs=2, learning_rate=1e-3)
    options = FitOptions(batch_size=8, frozen_blocks=25, cache_dir=str(tmp_path / "features"), cache_shard_images=16)
    cached = load_checkpoint(fit(labels, tmp_path / "cached", params, options, progress=False))["model"]
    live = load_checkpoint(fit(labels, tmp_path / "live", params, replace(options, feature_cache=False),
                               progress=False))["model"]
    start = sface_regressor.state_dict()
    for name, value in cached.items():
        block = int(name.split(".")[2]) if name.startswith("backbone.body.") else None
        if block is not None and block < 25:  # frozen: weights and BatchNorm statistics as initialised
            assert torch.equal(value, start[name]), name
    trained = [k for k in cached if k.startswith(("backbone.body.25.", "backbone.body.26.", "backbone.bn."))
               and cached[k].is_floating_point()]
    assert all(not torch.equal(cached[k], start[k]) for k in [*trained, "head.1.weight", "head.3.weight"])
    # Same flips, same dropout masks, same batches: the two runs differ only by the float16
    # rounding of the cached features. Measured on the trained weights, relative to how far
    # training moved them: runs that differ in their randomness (another seed) land about
    # 1.0 apart on this measure; rounding must leave them far closer.
    weights = [k for k in trained if k.endswith(("weight", "bias"))]
    moved = sum(float(((cached[k] - start[k]) ** 2).sum()) for k in weights) ** 0.5
    apart = sum(float(((cached[k] - live[k]) ** 2).sum()) for k in weights) ** 0.5
    assert apart < 0.2 * moved, (apart, moved)
    x = crops_to_tensor(_crops(labelled[1][:16]))
    scores = []
    for state in (cached, live):
        model = QualityRegressor()
        model.load_state_dict(state)
        with torch.no_grad():
            scores.append(model.eval()(x).numpy())
    assert np.abs(scores[0] - scores[1]).max() < 0.1  # on the 0..100 scale
    history = json.loads((tmp_path / "cached" / "fit.json").read_text())
    assert history["feature_cache"]["computed"] == 16 and history["options"]["frozen_blocks"] == 25


def test_fit_resumes_after_a_kill_without_redoing_finished_epochs(labelled, tmp_path):
    from trainer.fit import LAST, fit, load_checkpoint

    epochs = 5
    args = ["fit", "--labels", str(labelled[0]), "--out", str(tmp_path / "run"), "--epochs", str(epochs),
            "--batch-size", "8", "--freeze-blocks", "backbone", "--lr", "1e-3",
            "--cache-dir", str(tmp_path / "features"), "--quiet"]
    checkpoints = tmp_path / "run" / "checkpoints"
    process = subprocess.Popen(trainer_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (checkpoints / "epoch_002.pt").is_file(), 300, "the second epoch's checkpoint", process)
    kill(process)
    killed_after = load_checkpoint(checkpoints / LAST)["epoch"]
    assert 2 <= killed_after < epochs, "the run finished before it was killed"
    finished = {p.name: file_identity(p) for p in checkpoints.glob("epoch_*.pt")}
    assert sorted(finished) == [f"epoch_{e:03d}.pt" for e in range(1, killed_after + 1)]
    resumed = subprocess.run(trainer_command(*args[:-1], "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {killed_after}" in resumed.stdout
    state = load_checkpoint(checkpoints / LAST)
    assert [h["epoch"] for h in state["history"]] == list(range(1, epochs + 1))
    assert {p.name: file_identity(p) for p in checkpoints.glob("epoch_*.pt") if p.name in finished} == finished
    assert not list(checkpoints.glob("*.tmp-*")), "a temporary file was left as if it were a checkpoint"
    params = replace(RegressorParams(), epochs=epochs, learning_rate=1e-3)
    options = FitOptions(batch_size=8, frozen_blocks=27, cache_dir=str(tmp_path / "features"))
    uninterrupted = load_checkpoint(fit(labelled[0], tmp_path / "straight", params, options, progress=False))
    assert state_difference(state["model"], uninterrupted["model"]) < 1e-5

    with pytest.raises(FacegateError, match="different frozen_blocks"):
        fit(labelled[0], tmp_path / "run", params, replace(options, frozen_blocks=25), resume=True, progress=False)


def test_feature_cache_build_resumes_after_a_kill(labelled, tmp_path):
    features = tmp_path / "features"
    args = ["fit", "--labels", str(labelled[0]), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--batch-size", "8", "--freeze-blocks", "pair12-dw", "--cache-dir", str(features),
            "--cache-shard-images", "4", "--cache-batch", "4", "--quiet"]
    process = subprocess.Popen(trainer_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: any(features.glob("*/*.keys")), 300, "the first committed feature shard", process)
    kill(process)
    committed = {p.name: file_identity(p) for p in features.glob("*/*") if p.suffix in (".keys", ".npy")
                 and p.with_suffix(".keys").is_file()}
    done = sum(len(p.read_text().split()) for p in features.glob("*/*.keys"))
    assert 0 < done < 40, "the cache was complete before the kill"
    finished = subprocess.run(trainer_command(*args), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    report = json.loads((tmp_path / "run" / "fit.json").read_text())["feature_cache"]
    assert report["reused"] == done and report["computed"] == 40 - done
    assert {n: file_identity(p) for p in features.glob("*/*") if (n := p.name) in committed} == committed
    assert len(list(features.glob("*/*.keys"))) == 10


def test_freeze_blocks_out_of_range_is_a_clear_error(labelled, tmp_path):
    result = subprocess.run(trainer_command("fit", "--labels", str(labelled[0]), "--out", str(tmp_path),
                                            "--freeze-blocks", "30"), capture_output=True, text=True)
    assert result.returncode == 2 and "expected 0..27" in result.stderr and "Traceback" not in result.stderr


def test_norm_head_starts_at_the_least_squares_fit_on_sfaces_own_embedding_norm(labelled, tmp_path):
    """Labels that are an exact affine function of SFace's embedding length (computed by the
    recogniser's ONNX file, not by our torch twin): the norm head must start at that function
    (weight, intercept), and its exported file must reproduce it on unseen crops. With a
    learning rate of 0 the checkpoint is the start."""
    from engines.embedding_norm import EmbeddingNormScorer
    from engines.quality import QualityScorer
    from trainer.export import export_onnx
    from trainer.fit import fit, load_checkpoint
    from trainer.fit_options import NORM_HEAD

    norms_of = EmbeddingNormScorer().score
    paths = labelled[1][:16]
    norms = norms_of(_crops(paths))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,identity,label,mean_pos_sim,mean_neg_sim,n_pos\n"
                      + "".join(f"{p},x,{3.0 * n + 7.0:.5f},0,0,1\n" for p, n in zip(paths, norms, strict=True)))
    params = replace(RegressorParams(), epochs=1, learning_rate=0.0)
    options = FitOptions(batch_size=8, frozen_blocks=27, head=NORM_HEAD, cache_dir=str(tmp_path / "features"))
    checkpoint = fit(labels, tmp_path / "run", params, options, progress=False)
    state = load_checkpoint(checkpoint)["model"]
    assert float(state["norm_term.weight"]) == pytest.approx(3.0, abs=0.02)
    assert float(state["head.3.bias"]) == pytest.approx(7.0, abs=0.2)
    assert not state["head.3.weight"].any()
    export_onnx(checkpoint, tmp_path / "model", "norm-head-test", "0")
    unseen = _crops(labelled[1][16:30])
    np.testing.assert_allclose(QualityScorer(str(tmp_path / "model")).score(unseen),
                               np.clip(3.0 * norms_of(unseen) + 7.0, 0, 100), atol=0.15)
    with pytest.raises(FacegateError, match="different head"):
        fit(labels, tmp_path / "run", params, replace(options, head="sddfiqa"), resume=True, progress=False)


def test_a_regressor_rebuilt_from_its_state_computes_the_recognisers_features(sface_regressor, labelled):
    """Export and evaluation rebuild the model from a checkpoint's state dict, which does not
    carry BatchNorm epsilons: the architecture must hold SFace's own, or the exported model's
    features differ from the ones its head was trained on (sddfiqa-mfn-1 and -2 were exported so)."""
    from trainer.quality_model import QualityRegressor, crops_to_tensor

    rebuilt = QualityRegressor()
    rebuilt.load_state_dict(sface_regressor.state_dict())
    x = crops_to_tensor(_crops(labelled[1][:4]))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().backbone(x), sface_regressor.backbone(x), rtol=1e-5, atol=1e-5)


def test_the_norm_heads_start_leaves_the_batchnorm_statistics_of_trainable_blocks_alone(
        labelled, sface_regressor, tmp_path):
    """Below cut 27 the norm passes through BatchNorm layers that train: the starting fit must
    read them in eval mode (stored statistics, as export and evaluation will), not update them."""
    from trainer.distributed import start_world
    from trainer.fit import _Run
    from trainer.fit_data import open_labelled_images
    from trainer.fit_options import NORM_HEAD
    from trainer.quality_model import QualityRegressor, TrainablePart, crops_to_tensor

    images = open_labelled_images(labelled[0])
    options = FitOptions(batch_size=8, frozen_blocks=25, head=NORM_HEAD, cache_dir=str(tmp_path / "features"))
    run = _Run(start_world("cpu"), images, RegressorParams(), options, np.arange(len(images)), progress=False)
    started = run.model.state_dict()
    for name, value in sface_regressor.state_dict().items():
        if "running_" in name:
            assert torch.equal(started[name], value), name
    # The cut part and the whole model give the same scores with the norm term in.
    whole = QualityRegressor(head=NORM_HEAD)
    whole.load_state_dict(started)
    x = crops_to_tensor(_crops(labelled[1][:4]))
    with torch.no_grad():
        whole.eval()
        torch.testing.assert_close(TrainablePart(whole, 25).eval()(whole.front(x, 25)), whole(x), rtol=1e-5,
                                   atol=1e-4)
        assert float(whole.norm_term.weight) != 0.0
