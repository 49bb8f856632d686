"""``trainer rebuild`` end to end on a small slice: three dataset forms at once, a kill, a resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engines.paths import cache_root
from tests.support.recordio_writer import write_insightface
from tests.support.training import kill
from tests.support.waiting import wait_for


def _crops(seed_set: Path, split: str, identity: str) -> list[Path]:
    return sorted((seed_set / split / identity).iterdir())


@pytest.fixture
def slice_roots(seed_set, tmp_path) -> dict:
    """Seed crops as identity folders, as a list file and as an InsightFace RecordIO folder."""
    folders, listed, rec = tmp_path / "folders", tmp_path / "listed", tmp_path / "rec"
    for identity, count in (("woman_pexels", 16), ("carphone_man", 16), ("obama", 12)):
        (folders / identity).mkdir(parents=True)
        for path in _crops(seed_set, "train", identity)[:count]:
            shutil.copy(path, folders / identity / path.name)
    lines = []
    for identity in ("woman_pexels", "carphone_man"):
        (listed / identity).mkdir(parents=True)
        for path in _crops(seed_set, "train", identity)[16:28]:
            shutil.copy(path, listed / identity / path.name)
            lines.append(f"{identity}/{path.name} {identity}\n")
    (listed / "list.txt").write_text("".join(lines))
    people = ("woman_pexels", "carphone_man")
    write_insightface(rec, [(label, path.read_bytes()) for label, identity in enumerate(people)
                            for path in _crops(seed_set, "train", identity)[28:40]])
    # A cache of its own, so every stage runs fresh; the converted recogniser files are shared.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(cache_root() / "models")
    # The held-out slice lies where the seed set does, so step 5 evaluates it alone: evaluating the
    # seed set and a degraded copy beside another main set is tested in test_evaluation.py, and here
    # (fresh cache) it cost three quarters of the test.
    heldout = cache / "seed" / "heldout"
    for identity in ("macron", "ardern", "biden", "sunak", "door_man"):
        (heldout / identity).mkdir(parents=True)
        for path in _crops(seed_set, "heldout", identity)[:8]:
            shutil.copy(path, heldout / identity / path.name)
    return {"roots": [str(folders), str(listed / "list.txt"), str(rec)], "heldout": str(heldout), "cache": cache,
            "models_dir": str(tmp_path / "models")}


def test_rebuild_takes_three_forms_resumes_after_a_kill_and_reports_its_stages(slice_roots, tmp_path):
    config = tmp_path / "rebuild.json"
    config.write_text(json.dumps({
        "roots": slice_roots["roots"], "heldout": slice_roots["heldout"], "models_dir": slice_roots["models_dir"],
        "recognizers": ["sface"], "fit_params": {"epochs": 4, "learning_rate": 1e-3},
        "fit_options": {"batch_size": 8, "frozen_blocks": 27, "cache_shard_images": 16},
        "embedding": {"workers": 1, "dtype": "float32"}}))
    env = {**os.environ, "FACEGATE_CACHE": str(slice_roots["cache"])}
    command = [sys.executable, "-m", "tests.support.rebuild_runner", str(config)]
    rebuilds = slice_roots["cache"] / "rebuild"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(rebuilds.glob("fit-*/checkpoints/epoch_001.pt")), 600, "the first epoch", process)
    kill(process)
    progress = process.stderr.read()
    assert "features at cut 27" in progress and "img/s" in progress  # progress bars with throughput
    import torch

    last = next(rebuilds.glob("fit-*/checkpoints/last.pt"))
    assert torch.load(last, weights_only=False)["epoch"] < 4, "the fit finished before it was killed"

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    summary = json.loads(Path(result["summary"]).read_text())
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["embeddings + labels"]["reused"] and stages["embeddings + labels"]["details"]["identities"] == 7
    assert "feature cache" not in stages or stages["feature cache"]["details"]["computed"] == 0
    assert not stages["fit"]["reused"] and stages["fit"]["details"]["epochs"] == 4
    for name in ("fit", "export", "evaluate"):
        assert stages[name]["seconds"] > 0 and stages[name]["peak_rss_mib"] > 50
    earlier = {s["name"]: s for s in summary["earlier_runs"][-1]["stages"]}
    assert not earlier["embeddings + labels"]["reused"] and earlier["feature cache"]["details"]["computed"] == 92
    assert "stage" in resumed.stdout and "peak MiB" in resumed.stdout  # the table printed at the end

    labels_summary = json.loads(next(rebuilds.glob("labels-*/summary.json")).read_text())
    assert json.loads((Path(labels_summary["store"]) / "meta.json").read_text())["dtype"] == "float32"  # passed on
    history = torch.load(last, weights_only=False)["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    manifest = json.loads((Path(result["model"]) / "manifest.json").read_text())
    assert manifest["training"]["data"] == slice_roots["roots"] and manifest["training"]["identities"] == 7
    assert manifest["training"]["fit_options"]["frozen_blocks"] == 27
