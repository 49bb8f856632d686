"""SDD-FIQA pseudo-labels: exact against the per-sample reference, sensible on real crops."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

import trainer.draws as draws_module
from trainer.datasets import open_datasets
from trainer.draws import Layout, draw_block, identity_blocks
from trainer.embed import embed_dataset
from trainer.labels import batch_wasserstein, fast_labels, reference_labels
from trainer.labels_cli import read_labels
from trainer.sddfiqa import LabelParams
from trainer.seedset import read_index


def synthetic(sizes: list[int], dim: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings with identity structure, rows shuffled, identities of the given sizes."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    centres = rng.standard_normal((len(sizes), dim))
    emb = centres[ids] * 0.7 + rng.standard_normal((len(ids), dim))
    order = rng.permutation(len(ids))
    return emb[order].astype(np.float32), ids[order]


@pytest.fixture
def small_blocks(monkeypatch):
    """Several identity blocks even on small data, so block boundaries are exercised."""
    monkeypatch.setattr(draws_module, "IDENTITY_BLOCK", 5)


def test_batch_wasserstein_equals_scipy_for_unequal_sizes():
    rng = np.random.default_rng(7)
    rows, width = 400, 30
    u, v = rng.normal(size=(rows, width)), rng.normal(0.3, 1.2, size=(rows, width))
    u[:40] = np.round(u[:40], 1)  # ties
    v[:40] = np.round(v[:40], 1)
    m, n = rng.integers(1, width + 1, rows), rng.integers(1, width + 1, rows)
    ours = batch_wasserstein(u, m, v, n)
    theirs = [wasserstein_distance(u[i, : m[i]], v[i, : n[i]]) for i in range(rows)]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shared_by", ["identity", "image"])
@pytest.mark.parametrize("departures", [{}, {"sign_guard": True, "clip_percentile": 5.0}])
def test_fast_equals_reference_on_synthetic_embeddings(small_blocks, shared_by, departures):
    sizes = [1, 2, 3, 5, 9, 24, 25, 26, 40, 70, 1, 13, 31, 4, 2, 100]
    emb, ids = synthetic(sizes)
    params = LabelParams(negatives_shared_by=shared_by, **departures)
    fast, ref = fast_labels(emb, ids, params), reference_labels(emb, ids, params)
    np.testing.assert_array_equal(fast.labelled, ref.labelled)
    assert np.nanmax(np.abs(fast.labels - ref.labels)) <= 1e-9
    assert np.nanmax(np.abs(fast.distances - ref.distances)) <= 1e-12
    np.testing.assert_array_equal(fast.n_pos, ref.n_pos)
    np.testing.assert_allclose(fast.mean_neg_sim[fast.labelled], ref.mean_neg_sim[ref.labelled], atol=1e-12)
    counts = dict(zip(*np.unique(ids, return_counts=True), strict=True))
    expected_pos = np.array([min(24, counts[i] - 1) for i in ids])
    np.testing.assert_array_equal(fast.n_pos, expected_pos)
    assert np.isnan(fast.labels[expected_pos == 0]).all()
    assert np.nanmin(fast.labels) >= 0 and np.nanmax(fast.labels) <= 100


def test_fast_equals_reference_on_real_seed_embeddings(seed_set):
    embedded = embed_dataset(open_datasets([seed_set / "train"]), progress=False)
    ids = np.unique(np.asarray(embedded.identities), return_inverse=True)[1]
    params = LabelParams(repetitions=3)
    fast = fast_labels(embedded.embeddings, ids, params)
    ref = reference_labels(embedded.embeddings, ids, params)
    assert fast.labelled.sum() > 200
    assert np.nanmax(np.abs(fast.labels - ref.labels)) <= 1e-9


def test_draws_follow_the_reference_rules(small_blocks):
    _emb, ids = synthetic([1, 3, 26, 60, 8, 24, 25])
    layout = Layout.from_sorted_ids(np.sort(ids))
    for shared_by in ("identity", "image"):
        params = LabelParams(negatives_shared_by=shared_by)
        for block in identity_blocks(layout):
            draws = draw_block(layout, params, 2, block)
            first_row = int(layout.starts[block[0]])
            for local_row in range(len(draws.pos)):
                row = first_row + local_row
                identity = layout.identity_of_row[row]
                pos = draws.positives_of(local_row)
                neg = draws.negatives_of(local_row, identity - block[0])
                assert len(pos) == min(24, layout.sizes[identity] - 1)
                assert len(set(pos.tolist())) == len(pos) and row not in pos
                assert (layout.identity_of_row[pos] == identity).all()
                assert len(neg) == 24 and len(set(neg.tolist())) == 24
                assert (layout.identity_of_row[neg] != identity).all()


def test_labels_are_seeded_and_deterministic():
    emb, ids = synthetic([30, 40, 50, 20])
    a = fast_labels(emb, ids, LabelParams(seed=1))
    b = fast_labels(emb, ids, LabelParams(seed=1), workers=1)
    c = fast_labels(emb, ids, LabelParams(seed=2))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.nanmax(np.abs(a.labels - c.labels)) > 1e-6


def test_degraded_crops_get_lower_labels_than_their_originals(seed_set, seed_train_labels):
    out = seed_train_labels
    labels = read_labels(out / "labels.csv")
    pairs = [(labels[str(seed_set / r.path)], labels[str(seed_set / r.original)])
             for r in read_index(seed_set) if r.split == "train" and r.kind != "original"]
    assert len(pairs) >= 90
    lower = np.mean([degraded < original for degraded, original in pairs])
    assert lower >= 0.90, f"only {lower:.1%} of degraded crops scored below their originals"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["repetitions"] == 12 and summary["params"]["positives"] == 24
    assert (out / "histogram.png").stat().st_size > 10_000


def _small_dataset(seed_set: Path, root: Path) -> Path:
    for identity in ("woman_pexels", "carphone_man"):
        (root / identity).mkdir(parents=True)
        for path in sorted((seed_set / "train" / identity).glob("*_0.png"))[:6]:
            shutil.copy(path, root / identity / path.name)
    return root


def test_labels_cli_reports_unreadable_and_faceless_images(seed_set, tmp_path):
    data = _small_dataset(seed_set, tmp_path / "data")
    (data / "woman_pexels" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    cv2.imwrite(str(data / "carphone_man" / "wall.png"), np.full((300, 400, 3), 128, np.uint8))
    (data / "carphone_man" / "notes.txt").write_text("not an image")
    (data / "lonely").mkdir()
    shutil.copy(next((seed_set / "heldout" / "biden").glob("*_0.png")), data / "lonely" / "one.png")
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(data), "--out",
                             str(tmp_path / "out"), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert reasons["wall.png"] == "no face found"
    assert "corrupt" in reasons["corrupt.jpg"] or "decode" in reasons["corrupt.jpg"]
    assert reasons["notes.txt"] == "not an image file"
    assert summary["one_image_identities"] == ["lonely"]
    with open(tmp_path / "out" / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 13 and sum(1 for r in rows if r["label"]) == 12


@pytest.mark.parametrize("make", ["empty", "one_identity", "missing"])
def test_unusable_datasets_end_with_a_clear_message(seed_set, tmp_path, make):
    data = tmp_path / "data"
    if make == "empty":
        data.mkdir()
    elif make == "one_identity":
        _small_dataset(seed_set, data)
        shutil.rmtree(data / "carphone_man")
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(data), "--out",
                             str(tmp_path / "out"), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("trainer labels: error:")
    assert "Traceback" not in result.stderr
    expected = {"empty": "no images", "one_identity": "at least two identities", "missing": "does not exist"}
    assert expected[make] in result.stderr


def test_precomputed_embeddings_input(tmp_path):
    emb, ids = synthetic([5, 7, 30])
    np.save(tmp_path / "emb.npy", emb)
    (tmp_path / "ids.txt").write_text("".join(f"img{i}.png\t{k}\n" for i, k in enumerate(ids)))
    subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--embeddings", str(tmp_path / "emb.npy"),
                    "--identities", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "out"), "--quiet"],
                   check=True)
    labels = read_labels(tmp_path / "out" / "labels.csv")
    expected = fast_labels(emb, ids).labels
    assert labels["img3.png"] == pytest.approx(expected[3], abs=1e-6)


def test_embeddings_are_reused_by_content(seed_set, tmp_path):
    data = _small_dataset(seed_set, tmp_path / "data")
    first = embed_dataset(open_datasets([data]), cache=tmp_path / "cache", progress=False)
    second = embed_dataset(open_datasets([data]), cache=tmp_path / "cache", progress=False)
    assert first.reused == 0 and second.reused == len(second.paths) == 12
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    changed = sorted((data / "woman_pexels").iterdir())[0]
    cv2.imwrite(str(changed), cv2.GaussianBlur(cv2.imread(str(changed)), (0, 0), 3))
    third = embed_dataset(open_datasets([data]), cache=tmp_path / "cache", progress=False)
    assert third.reused == 11  # the other images' bytes are in the previous store
    row = third.paths.index(str(changed))
    assert not np.array_equal(third.embeddings[row], first.embeddings[row])
    others = np.arange(12) != row
    np.testing.assert_array_equal(third.embeddings[others], first.embeddings[others])
    assert not third.store_dir.with_name(third.store_dir.name + ".previous").exists()


@pytest.mark.parametrize("shared_by", ["identity", "image"])
def test_torch_products_give_the_same_labels(small_blocks, shared_by):
    """The GPU path's code (torch float64 products), run here on torch's CPU device."""
    emb, ids = synthetic([2, 5, 26, 40, 9, 1, 30])
    params = LabelParams(negatives_shared_by=shared_by, repetitions=3)
    on_torch = fast_labels(emb, ids, params, device="cpu")
    reference = reference_labels(emb, ids, params)
    assert np.nanmax(np.abs(on_torch.labels - reference.labels)) <= 1e-9


@pytest.mark.gpu
def test_labels_on_a_gpu_match_the_reference():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the torch path is checked on the CPU device above")
    emb, ids = synthetic([3, 25, 40, 12, 60])
    params = LabelParams(repetitions=4)
    assert np.nanmax(np.abs(fast_labels(emb, ids, params, device="cuda").labels
                            - reference_labels(emb, ids, params).labels)) <= 1e-9


def test_labels_from_a_memory_mapped_float16_store_equal_in_memory_labels(small_blocks, tmp_path, monkeypatch):
    """The scale path (rows read from a memory map, unusable rows masked, small row chunks) changes nothing."""
    import trainer.label_blocks as blocks_module

    emb, ids = synthetic([2, 5, 26, 40, 9, 1, 30, 3, 12])
    stored = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float16, shape=emb.shape)
    stored[:] = emb
    stored.flush()
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    usable = np.ones(len(ids), bool)
    usable[::5] = False
    params = LabelParams(repetitions=4)
    in_memory = fast_labels(emb.astype(np.float16).astype(np.float32)[usable], ids[usable], params)
    monkeypatch.setattr(blocks_module, "_ROW_CHUNK", 7)
    from_store = fast_labels(mapped, ids, params, usable=usable)
    np.testing.assert_array_equal(from_store.labels[usable], in_memory.labels)
    np.testing.assert_array_equal(from_store.distances[:, usable], in_memory.distances)
    spilled = fast_labels(mapped, ids, params, usable=usable, keep_distances=False)  # distances in a file
    assert spilled.distances is None
    np.testing.assert_array_equal(spilled.labels, from_store.labels)
    np.testing.assert_array_equal(spilled.mean_neg_sim, from_store.mean_neg_sim)
    np.testing.assert_array_equal(from_store.n_pos[usable], in_memory.n_pos)
    assert not from_store.labelled[~usable].any() and np.isnan(from_store.labels[~usable]).all()
