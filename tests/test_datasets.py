"""Dataset readers behind one interface: identity folders, list files, several roots."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.errors import DatasetError, ImageReadError
from tests.support.recordio_writer import MAGIC, pack, write_insightface, write_records
from trainer.datasets import IdentityFolders, dataset_kind, open_dataset, open_datasets, open_spec, root_names
from trainer.datasets.recordio import RecordIODataset
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


# ---------------------------------------------------------------------------------------
# InsightFace RecordIO, written by tests/support/recordio_writer.py from the documented layout.

MAGIC_AS_FLOAT = struct.unpack("<f", struct.pack("<I", MAGIC))[0]


def _rec_items(seed_set: Path) -> list[tuple[int, bytes, Path]]:
    """(label, JPEG bytes, source crop) of real crops of three people, labels as MS1M's numbers."""
    items = []
    for label, identity in ((3, "woman_pexels"), (0, "carphone_man"), (1, "obama")):
        for path in _crops(seed_set, identity, 4):
            items.append((label, cv2.imencode(".jpg", cv2.imread(str(path)))[1].tobytes(), path))
    return items


@pytest.fixture
def rec_folder(seed_set, tmp_path) -> tuple[Path, list[tuple[int, bytes, Path]]]:
    items = _rec_items(seed_set)
    folder = tmp_path / "ms1m"
    # Image 5 carries two labels, the second with the magic number's bit pattern: a split record.
    write_insightface(folder, [(label, data) for label, data, _ in items], identities=4,
                      extra_labels={5: [float(items[5][0]), MAGIC_AS_FLOAT]})
    return folder, items


def test_recordio_crops_and_labels_read_back_equal(rec_folder):
    folder, items = rec_folder
    assert dataset_kind(folder) == "recordio" and dataset_kind(folder / "train.rec") == "recordio"
    raw = (folder / "train.rec").read_bytes()
    offsets = [int(line.split("\t")[1]) for line in (folder / "train.idx").read_text().splitlines()]
    flags = [struct.unpack_from("<I", raw, offset + 4)[0] >> 29 for offset in offsets]
    assert flags.count(1) == 1  # the record with the magic number in its labels is split in two parts
    dataset = open_dataset(folder)
    assert isinstance(dataset, RecordIODataset) and dataset.identity_count == 4
    assert len(dataset) == len(items) == 12
    grouped = sorted(items, key=lambda item: item[0])  # the writer groups images by identity
    assert dataset.identity_names == ["0", "1", "3"]
    assert [dataset.identity(i) for i in range(12)] == [str(label) for label, _, _ in grouped]
    assert dataset.key(0) == "ms1m#1" and dataset.index_of("ms1m#12") == 11
    for i, (_label, data, _path) in enumerate(grouped):
        assert dataset.read_bytes(i) == data
        np.testing.assert_array_equal(dataset.read(i), cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))


def test_recordio_without_header_records_reads_every_label(seed_set, tmp_path):
    items = _rec_items(seed_set)[:6]
    write_records(tmp_path / "plain", {n: pack(float(label), data) for n, (label, data, _) in enumerate(items)})
    dataset = open_dataset(tmp_path / "plain" / "train.rec")
    assert dataset.name == "plain" and dataset.identity_names == ["0", "3"]
    assert [dataset.identity(i) for i in range(6)] == [str(label) for label, _, _ in items]
    assert dataset.read_bytes(4) == items[4][1]


def test_recordio_truncated_index_is_a_clear_error(rec_folder):
    folder, _ = rec_folder
    lines = (folder / "train.idx").read_text().splitlines(keepends=True)
    (folder / "train.idx").write_text("".join(lines[:7]) + lines[7].split("\t")[0] + "\t")
    with pytest.raises(DatasetError, match=r"truncated or malformed at line 8 \(record 7\)"):
        open_dataset(folder)
    (folder / "train.idx").write_text("".join(line for line in lines if not line.startswith("9\t")))
    with pytest.raises(DatasetError, match=r"no entry for record 9 .*truncated"):
        open_dataset(folder)


def test_recordio_corrupt_record_is_named_and_others_still_read(rec_folder):
    folder, _ = rec_folder
    offsets = dict(line.split("\t") for line in (folder / "train.idx").read_text().splitlines())
    data = bytearray((folder / "train.rec").read_bytes())
    data[int(offsets["4"]) : int(offsets["4"]) + 4] = b"JUNK"
    (folder / "train.rec").write_bytes(bytes(data))
    dataset = open_dataset(folder)
    with pytest.raises(ImageReadError, match=r"train.rec record 4 \(offset \d+\) is corrupt: magic"):
        dataset.read(3)
    assert dataset.read(4).shape == (112, 112, 3)
    (folder / "train.rec").write_bytes(bytes(data[: int(offsets["12"]) + 40]))
    with pytest.raises(DatasetError, match=r"record 13 offset \d+, beyond the end"):
        open_dataset(folder)


def test_recordio_labels_beyond_property_count_are_refused(seed_set, tmp_path):
    items = _rec_items(seed_set)
    write_insightface(tmp_path / "rec", [(label, data) for label, data, _ in items], identities=2)
    with pytest.raises(DatasetError, match="announces 2 identities"):
        open_dataset(tmp_path / "rec")


def test_trainer_labels_reads_recordio_and_list_roots(rec_folder, seed_set, tmp_path):
    folder, items = rec_folder
    listing = tmp_path / "extra" / "faces.txt"
    listing.parent.mkdir()
    lines = []
    for n, path in enumerate(_crops(seed_set, "woman_pexels", 3) + _crops(seed_set, "obama", 3)):
        shutil.copy(path, listing.parent / f"{n}.png")
        lines.append(f"{n}.png {'w' if n < 3 else 'o'}\n")
    listing.write_text("".join(lines))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(folder), "--data",
                             str(listing), "--out", str(out), "--quiet", "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open(out / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 18 and all(r["label"] for r in rows)
    assert {r["identity"] for r in rows} == {"ms1m/0", "ms1m/1", "ms1m/3", "faces/w", "faces/o"}
    by_source = {data: path for _, data, path in items}
    labelled = open_labelled(out)
    for position, key in zip(labelled.positions, labelled.keys, strict=True):
        image = labelled.dataset.read(int(position))
        if key.startswith("ms1m#"):  # the crop the record was written from, through JPEG
            data = labelled.dataset.read_bytes(int(position))
            source = cv2.imread(str(by_source[data]))
            assert np.abs(image.astype(int) - source).mean() < 3
        else:
            np.testing.assert_array_equal(image, cv2.imread(str(listing.parent / key.split("/", 1)[1])))


def test_damaged_recordio_through_the_trainer(rec_folder, tmp_path):
    """A corrupt record is skipped and named; a truncated index stops the run before anything is written."""
    folder, _ = rec_folder
    offsets = dict(line.split("\t") for line in (folder / "train.idx").read_text().splitlines())
    data = bytearray((folder / "train.rec").read_bytes())
    data[int(offsets["4"]) : int(offsets["4"]) + 4] = b"JUNK"
    (folder / "train.rec").write_bytes(bytes(data))

    def labels(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(folder), "--out",
                               str(out), "--quiet", "--cache", str(tmp_path / "cache")], capture_output=True, text=True)

    result = labels(tmp_path / "out")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 11
    [skipped] = summary["skipped"]
    assert skipped["path"] == f"{folder / 'train.rec'}#4" and "record 4" in skipped["reason"]
    lines = (folder / "train.idx").read_text().splitlines(keepends=True)
    (folder / "train.idx").write_text("".join(lines[:7]) + "7\t")
    result = labels(tmp_path / "out2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 8 (record 7)" in result.stderr
    assert not (tmp_path / "out2" / "labels.csv").exists()
