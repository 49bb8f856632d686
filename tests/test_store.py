"""The embedding store: resumable after a real kill, shards split over processes and ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.waiting import wait_for
from trainer.datasets import open_datasets
from trainer.embed import embed_to_store
from trainer.store import EMBEDDED, EmbeddingStore

SHARD = 8
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def crops(seed_set, tmp_path_factory) -> Path:
    """96 real aligned crops of three people (12 shards of 8)."""
    root = tmp_path_factory.mktemp("crops") / "faces"
    for identity, count in (("woman_pexels", 42), ("carphone_man", 42), ("obama", 12)):
        (root / identity).mkdir(parents=True)
        for path in sorted((seed_set / "train" / identity).glob("*.png"))[:count]:
            shutil.copy(path, root / identity / path.name)
    return root


@pytest.fixture(scope="module")
def reference_store(crops, tmp_path_factory) -> EmbeddingStore:
    """The same crops embedded in one uninterrupted in-process run."""
    folder = tmp_path_factory.mktemp("ref") / "store"
    run = embed_to_store(open_datasets([crops]), folder, shard_size=SHARD, workers=1, progress=False)
    assert run.embedded == 96 and run.shards_done_before == 0
    return EmbeddingStore(folder)


def _markers(store: Path) -> dict[str, tuple[int, dict]]:
    return {p.name: (p.stat().st_mtime_ns, json.loads(p.read_text())) for p in (store / "shards").glob("*.json")}


def _embed_cmd(crops: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", "embed", "--data", str(crops), "--store", str(store),
            "--shard-size", str(SHARD), "--quiet", *extra]


def _same_embeddings(store: Path, reference: EmbeddingStore) -> None:
    made = EmbeddingStore(store)
    assert made.meta.n == reference.meta.n and made.done_shards() == made.meta.shards
    assert (np.asarray(made.status) == EMBEDDED).all()
    np.testing.assert_array_equal(made.identity, reference.identity)
    np.testing.assert_array_equal(made.digests, reference.digests)
    # One ONNX Runtime thread per worker vs all threads: float16 rows may differ in the last bit.
    np.testing.assert_allclose(np.asarray(made.embeddings, np.float32), np.asarray(reference.embeddings, np.float32),
                               atol=2e-3)


def test_a_killed_run_resumes_with_only_the_missing_shards(crops, reference_store, tmp_path):
    store, workers = tmp_path / "store", "2"
    process = subprocess.Popen(_embed_cmd(crops, store, "--workers", workers), env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: len(list((store / "shards").glob("*.json"))) >= 3 if (store / "shards").is_dir() else False,
                 240, "three shards marked done")
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no chance to clean up, as with a power cut or the OOM killer
        process.wait()
    # Spawned workers die with their parent: nothing writes into the store any more.
    wait_for(lambda: subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True).returncode != 0,
             30, "the killed run's workers to end")
    before = _markers(store)
    assert 3 <= len(before) < 12, "the kill came too late to leave shards to do"
    early = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--store", str(store), "--out",
                            str(tmp_path / "labels"), "--quiet"], env=_env(), capture_output=True, text=True)
    assert early.returncode == 2 and f"is incomplete: {len(before)} of 12 shards done" in early.stderr
    resumed = subprocess.run(_embed_cmd(crops, store, "--workers", workers), env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = _markers(store)
    assert len(after) == 12
    for name, (mtime, marker) in before.items():  # finished shards were not done again
        assert after[name] == (mtime, marker)
    redone = sum(marker["embedded"] for name, (_, marker) in after.items() if name not in before)
    assert f"{len(before)} shards already done" in resumed.stdout
    assert f"embed: {redone} embedded" in resumed.stdout and redone == 96 - SHARD * len(before)
    _same_embeddings(store, reference_store)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_take_alternate_shards(crops, reference_store, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    store = tmp_path / "store"
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                             str(_free_port()), "-m", *_embed_cmd(crops, store)[2:]], env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    markers = _markers(store)
    assert len(markers) == 12
    assert all(marker["rank"] == marker["shard"] % 2 for _, marker in markers.values())
    assert result.stdout.count("embed: ") == 1  # rank 0 reports
    _same_embeddings(store, reference_store)


def test_float32_on_request_and_plain_numpy_files(crops, reference_store, tmp_path):
    run = embed_to_store(open_datasets([crops]), tmp_path / "f32", dtype="float32", shard_size=32, workers=1,
                         progress=False)
    wide = np.load(run.store_dir / "embeddings.npy", mmap_mode="r")
    assert wide.dtype == np.float32 and reference_store.embeddings.dtype == np.float16
    assert np.abs(np.linalg.norm(wide, axis=1) - 1).max() < 1e-5
    np.testing.assert_allclose(wide, np.asarray(reference_store.embeddings, np.float32), atol=1e-3)
    assert json.loads((run.store_dir / "identities.json").read_text()) == ["carphone_man", "obama", "woman_pexels"]


def test_torch_sface_matches_onnxruntime(crops):
    """The GPU ranks' embedder (SFace in torch), run here on torch's CPU device."""
    from engines.embedder import Embedder
    from trainer.embed_shards import TorchSFace, make_embedder

    dataset = open_datasets([crops])
    batch = np.stack([dataset.read(i) for i in range(0, 96, 12)])
    ours = Embedder(backend=TorchSFace("cpu")).embed(batch)
    theirs = make_embedder("sface-2021dec", "cpu", 1).embed(batch)
    assert (ours * theirs).sum(axis=1).min() > 0.9999


def test_labels_from_an_existing_store(crops, reference_store, tmp_path):
    from trainer.labels import fast_labels
    from trainer.labels_io import open_labelled

    out = tmp_path / "labels"
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--store", str(reference_store.folder),
                             "--out", str(out), "--quiet"], env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = fast_labels(np.asarray(reference_store.embeddings, np.float32), np.asarray(reference_store.identity))
    labelled = open_labelled(out)  # the store recorded its dataset: keys resolve to the same crops
    assert len(labelled.positions) == 96
    np.testing.assert_allclose(labelled.labels, expected.labels[labelled.positions], atol=1e-4)
    assert labelled.dataset.path(int(labelled.positions[0])).startswith(str(crops))
