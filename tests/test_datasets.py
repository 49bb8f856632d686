"""Dataset readers behind one interface: identity folders, list files, several roots."""

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

from engines.errors import DatasetError, ImageReadError
from trainer.datasets import IdentityFolders, dataset_kind, open_dataset, open_datasets, open_spec, root_names
from trainer.labels_io import open_labelled


def _crops(seed_set: Path, identity: str, count: int, split: str = "train") -> list[Path]:
    return sorted((seed_set / split / identity).glob("*_0.png"))[:count]


def _folders(seed_set: Path, root: Path, people: dict[str, tuple[str, int]]) -> Path:
    """``root/<name>/`` with ``count`` real crops of the seed set's ``identity`` each."""
    for name, (identity, count) in people.items():
        (root / name).mkdir(parents=True)
        split = "train" if (seed_set / "train" / identity).is_dir() else "heldout"
        for path in _crops(seed_set, identity, count, split):
            shutil.copy(path, root / name / path.name)
    return root


def test_root_names_are_folder_names_made_distinct_by_their_parents(tmp_path):
    for folder in ("pins/train", "seed/train", "celeba", "lists"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "lists" / "train.txt").write_text("a.png x\n")
    assert root_names([tmp_path / "pins/train", tmp_path / "celeba"]) == ["train", "celeba"]
    assert root_names([tmp_path / "pins/train", tmp_path / "seed/train", tmp_path / "celeba"]) == [
        "pins-train", "seed-train", "celeba"]
    assert root_names([tmp_path / "pins/train", tmp_path / "lists/train.txt"]) == ["pins-train", "lists-train"]
    with pytest.raises(DatasetError, match="given twice"):
        root_names([tmp_path / "celeba", tmp_path / "pins/../celeba"])


def test_identity_folders_read_real_crops_with_stable_keys(seed_set, tmp_path):
    root = _folders(seed_set, tmp_path / "faces", {"alex": ("woman_pexels", 3), "bo": ("carphone_man", 2)})
    (root / "bo" / "notes.txt").write_text("not an image")
    (root / "bo" / "nested").mkdir()
    shutil.copy(_crops(seed_set, "obama", 1)[0], root / "bo" / "nested" / "deep.png")
    (root / "empty").mkdir()
    dataset = open_dataset(root)
    assert dataset_kind(root) == "folders" and isinstance(dataset, IdentityFolders)
    assert dataset.identity_names == ["alex", "bo"]
    assert len(dataset) == 6 and dataset.identity_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.key(3) == "faces/bo/" + sorted(p.name for p in (root / "bo").glob("*.png"))[0]
    assert dataset.key(5) == "faces/bo/nested/deep.png"
    assert dataset.skipped == [(str(root / "bo" / "notes.txt"), "not an image file")]
    for i in range(len(dataset)):
        np.testing.assert_array_equal(dataset.read(i), cv2.imread(dataset.path(i)))
        assert dataset.index_of(dataset.key(i)) == i
    stamp = dataset.stamp(0)
    Path(dataset.path(0)).write_bytes(b"\xff\xd8 broken")
    assert IdentityFolders(root).stamp(0) != stamp
    with pytest.raises(ImageReadError, match="alex"):
        dataset.read(0)


def test_several_roots_never_merge_identities(seed_set, tmp_path):
    first = _folders(seed_set, tmp_path / "a" / "train", {"alex": ("woman_pexels", 3), "bo": ("carphone_man", 2)})
    second = _folders(seed_set, tmp_path / "b" / "train", {"alex": ("obama", 2), "lone": ("biden", 1)})
    dataset = open_datasets([first, second])
    assert dataset.identity_names == ["a-train/alex", "a-train/bo", "b-train/alex", "b-train/lone"]
    assert dataset.identity_index.tolist() == [0, 0, 0, 1, 1, 2, 2, 3]
    keys = dataset.all_keys()
    assert len(set(keys)) == len(keys) == 8
    assert keys[5].startswith("b-train/alex/")
    np.testing.assert_array_equal(dataset.read(6), cv2.imread(str(sorted((second / "alex").iterdir())[1])))
    reopened = open_spec(json.loads(json.dumps(dataset.spec())))
    assert reopened.all_keys() == keys and reopened.identity_names == dataset.identity_names
    assert open_datasets([first]).identity_names == ["alex", "bo"]  # one root: names as in the folder


def test_list_file_paths_are_relative_to_the_list(seed_set, tmp_path):
    images = tmp_path / "lists" / "imgs"
    images.mkdir(parents=True)
    crops = _crops(seed_set, "woman_pexels", 2) + _crops(seed_set, "carphone_man", 2)
    for n, path in enumerate(crops):
        shutil.copy(path, images / f"face {n}.png")
    listing = tmp_path / "lists" / "train.txt"
    listing.write_text("# path identity\nimgs/face 0.png 7\nimgs/face 2.png 3\n\nimgs/face 1.png 7\n"
                       "imgs/face 3.png 3\nno-identity-here\n" + f"{images / 'face 0.png'} 9\n")
    dataset = open_dataset(listing)
    assert dataset_kind(listing) == "list" and dataset.name == "train"
    assert dataset.identity_names == ["7", "3", "9"]
    assert dataset.identity_index.tolist() == [0, 1, 0, 1, 2]
    assert dataset.key(1) == "train/imgs/face 2.png"
    assert dataset.skipped == [(f"{listing}:7", "no identity on the line (expected 'path identity')")]
    for i, n in enumerate([0, 2, 1, 3, 0]):
        np.testing.assert_array_equal(dataset.read(i), cv2.imread(str(crops[n])))
    (tmp_path / "lists" / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DatasetError, match="names no images"):
        open_dataset(tmp_path / "lists" / "empty.txt")


def test_labels_from_several_roots_reopen_for_training(seed_set, tmp_path):
    first = _folders(seed_set, tmp_path / "pins" / "train", {"alex": ("woman_pexels", 5), "bo": ("carphone_man", 5)})
    second = _folders(seed_set, tmp_path / "seed" / "train", {"alex": ("obama", 4), "lone": ("biden", 1)})
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(first), "--data",
                             str(second), "--out", str(out), "--quiet", "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["identities"] == 4 and summary["one_image_identities"] == ["seed-train/lone"]
    assert [r["name"] for r in summary["data"]["roots"]] == ["pins-train", "seed-train"]
    with open(out / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["identity"] for r in rows} == {"pins-train/alex", "pins-train/bo", "seed-train/alex", "seed-train/lone"}
    labelled = open_labelled(out)
    assert len(labelled.positions) == 14  # every image but the one-image identity's
    by_key = {r["key"]: r for r in rows}
    for position, label, key in zip(labelled.positions, labelled.labels, labelled.keys, strict=True):
        row = by_key[key]
        assert float(row["label"]) == pytest.approx(float(label), abs=1e-4)
        np.testing.assert_array_equal(labelled.dataset.read(int(position)), cv2.imread(row["path"]))
        assert labelled.dataset.identity(int(position)) == row["identity"]
