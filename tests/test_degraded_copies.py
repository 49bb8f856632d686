"""Degraded training copies: one per item of a fraction, in its original's identity, reproducible."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.errors import DatasetError
from trainer.datasets import DegradedCopies, DegradeOptions, open_datasets, open_spec, with_degraded_copies
from trainer.datasets.degraded import training_strength
from trainer.degrade import DEGRADATIONS, ladder
from trainer.fit_data import open_labelled_images


@pytest.fixture
def faces(seed_set, tmp_path) -> Path:
    """Real clean crops of three people (up to 12 each) and a one-image identity."""
    root = tmp_path / "faces"
    for identity, split, count in (("woman_pexels", "train", 12), ("carphone_man", "train", 12),
                                   ("obama", "train", 12), ("biden", "heldout", 1)):
        (root / identity).mkdir(parents=True)
        for path in sorted((seed_set / split / identity).glob("*_0.png"))[:count]:
            shutil.copy(path, root / identity / path.name)
    return root


def test_copies_stay_in_their_identity_and_are_reproducible(faces):
    base = open_datasets([faces])
    dataset = with_degraded_copies(base, DegradeOptions(0.5, seed=3))
    assert isinstance(dataset, DegradedCopies) and dataset.identity_names == base.identity_names
    copies = range(len(base), len(dataset))
    assert 0.3 * (len(base) - 1) <= len(copies) <= 0.7 * (len(base) - 1)  # about half of the three people's
    lone = base.identity_names.index("biden")
    for i in copies:
        plan = dataset.plan(i)
        assert dataset.identity(i) == base.identity(plan.item)  # a positive of its original
        assert base.identity_index[plan.item] != lone  # one-image identities get no copy
        assert dataset.key(i) == f"{base.key(plan.item)}~{plan.kind}@{plan.strength:g}"
        steps = ladder(plan.kind)
        assert min(steps) <= plan.strength <= max(steps)
        degraded, original = dataset.read(i), base.read(plan.item)
        assert degraded.shape == original.shape and np.abs(degraded.astype(int) - original).mean() > 0.5
        np.testing.assert_array_equal(dataset.read(i), degraded)  # noise and patches are seeded
    for i in range(len(base)):  # originals unchanged, in place
        assert dataset.key(i) == base.key(i) and dataset.read_bytes(i) == base.read_bytes(i)
    keys = dataset.all_keys()
    assert len(set(keys)) == len(keys) and keys == [dataset.key(i) for i in range(len(dataset))]

    reopened = open_spec(json.loads(json.dumps(dataset.spec())))  # as summary.json records it
    assert reopened.all_keys() == keys
    assert [reopened.read_bytes(i) for i in copies] == [dataset.read_bytes(i) for i in copies]

    more = with_degraded_copies(base, DegradeOptions(0.9, seed=3))
    assert set(keys) < set(more.all_keys())  # a larger fraction keeps the smaller one's copies
    other_seed = with_degraded_copies(base, DegradeOptions(0.5, seed=4))
    assert set(other_seed.all_keys()) != set(keys)
    assert with_degraded_copies(base, DegradeOptions(0.0)) is base
    with pytest.raises(DatasetError, match="between 0 and 1"):
        DegradeOptions(1.5)


def test_strengths_cover_each_ladder_from_its_mild_steps():
    for kind in DEGRADATIONS:
        steps = ladder(kind)
        drawn = [training_strength(kind, p) for p in np.linspace(0, 1, 201)]
        assert drawn[0] == pytest.approx(steps[0]) and drawn[-1] == pytest.approx(steps[-1], rel=1e-3)
        assert all(np.sign(b - a) in (0, np.sign(steps[-1] - steps[0])) for a, b in itertools.pairwise(drawn))
        # 60% of the positions fall between the mildest step and level 1 (the ladder's fourth step)
        mild = np.mean([(s - steps[0]) / (steps[3] - steps[0]) <= 1 for s in drawn])
        assert 0.55 <= mild <= 0.65


def test_labels_and_training_read_the_copies_in_their_identities(faces, tmp_path):
    out = tmp_path / "labels"
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(faces), "--out", str(out),
                             "--degrade-fraction", "0.5", "--degrade-seed", "3", "--cache", str(tmp_path / "cache"),
                             "--workers", "1", "--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    base = open_datasets([faces])
    expected = with_degraded_copies(base, DegradeOptions(0.5, seed=3))
    assert summary["degraded_copies"]["copies"] == len(expected) - len(base) > 0
    assert summary["one_image_identities"] == ["biden"]
    with open(out / "labels.csv") as handle:
        rows = {r["key"]: r for r in csv.DictReader(handle)}
    copies = {k: r for k, r in rows.items() if "~" in k}
    assert len(copies) == summary["degraded_copies"]["copies"]
    for key, row in copies.items():
        original = rows[key.split("~")[0]]
        assert row["identity"] == original["identity"] and row["label"]
        assert int(row["n_pos"]) == int(original["n_pos"])  # same identity: the same number of positives
    drops = [float(rows[k.split("~")[0]]["label"]) - float(r["label"]) for k, r in copies.items()]
    assert np.mean(drops) > 0, "degraded copies should score below their originals on average"

    images = open_labelled_images(out / "labels.csv")  # what `trainer fit` reads
    assert len(images) == len(base) - 1 + len(copies)  # the one-image identity is not labelled
    position = {name: j for j, name in enumerate(images.names)}
    for i in range(len(base), len(expected)):
        np.testing.assert_array_equal(images.read(position[expected.path(i)]), expected.read(i))

    again = subprocess.run([sys.executable, "-m", "trainer.cli", "embed", "--data", str(faces), "--degrade-fraction",
                            "0.5", "--degrade-seed", "3", "--cache", str(tmp_path / "cache"), "--workers", "1",
                            "--quiet"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 embedded" in again.stdout, again.stdout + again.stderr
