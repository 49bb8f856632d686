"""Threshold tables from a model's manifest, and the quality bands named from them."""

from __future__ import annotations

import copy

import pytest

from engines.errors import ModelError
from engines.manifest import read_manifest
from engines.modelfiles import model_dir
from engines.registry import current_model
from engines.thresholds import BandLookup, ThresholdRow, bands_of, derive_bands, read_table
from tests.support.models import SAMPLE_TABLE, model_with_table


def rows(*triples):
    return tuple(ThresholdRow(quality=q, discarded=d, fnmr=f) for q, d, f in triples)


def test_bands_follow_the_rule_on_the_sample_table(tmp_path):
    manifest = read_manifest(model_with_table(tmp_path / "m"))
    bands = bands_of(manifest)
    # sface is the table's first recogniser. Base FNMR 0.200; the best within half the images
    # discarded is 0.060 (q 50; the 0.010 at q 60 discards 70% and is not considered): gain 0.14.
    # usable: first FNMR ≤ 0.200 − 0.5·0.14 = 0.13 → q 20; good: first ≤ 0.200 − 0.9·0.14 = 0.074 → q 40.
    assert bands.recognizer == "sface" and bands.model == manifest.tag and bands.fmr == 0.001
    assert [(b.name, b.min_quality) for b in bands.bands] == [("good", 40.0), ("usable", 20.0), ("poor", 0.0)]
    assert (bands.bands[0].fnmr, bands.bands[0].discarded) == (0.064, 0.30)
    assert [bands.name(q) for q in (0.0, 19.9, 20.0, 39.9, 40.0, 100.0)] == [
        "poor", "poor", "usable", "usable", "good", "good"]
    dlib = bands_of(manifest, "dlib-resnet")
    assert [(b.name, b.min_quality) for b in dlib.bands] == [("good", 50.0), ("usable", 25.0), ("poor", 0.0)]


def test_a_curve_that_never_improves_names_no_bands():
    assert derive_bands(rows((0, 0, 0.1), (20, 0.2, 0.1), (40, 0.4, 0.12))) is None
    assert derive_bands(rows((0, 0, 0.0), (20, 0.2, 0.0))) is None


def test_the_shipped_model_names_bands_from_its_table_and_the_embedding_norm_none():
    manifest = read_manifest(model_dir(current_model("quality")))
    table = read_table(manifest)
    assert table is not None and bands_of(manifest) is not None  # shipped models carry their evaluation's table
    assert BandLookup().name(manifest.tag, 100.0) == "good"
    recognizer = read_manifest(model_dir("sface-2021dec"))
    assert read_table(recognizer) is None and bands_of(recognizer) is None
    assert BandLookup().name(f"embedding-norm:{recognizer.tag}", 11.0) is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t["recognizers"]["sface"].reverse(), "increasing quality"),
    (lambda t: t["recognizers"]["sface"][1].update(fnmr=1.5), r"recognizers\.sface\.1\.fnmr"),
    (lambda t: t["recognizers"].update(x=[t["recognizers"]["sface"][0]]), "at least 2"),
    (lambda t: t.pop("fmr"), r"thresholds\.fmr"),
    (lambda t: t["recognizers"]["sface"][2].update(discarded=0.01), "'discarded' falls"),
])
def test_a_malformed_table_is_refused_with_the_field(tmp_path, change, message):
    table = copy.deepcopy(SAMPLE_TABLE)
    change(table)
    manifest = read_manifest(model_with_table(tmp_path / "m", table))
    with pytest.raises(ModelError, match=message):
        bands_of(manifest)


def test_an_unknown_recogniser_is_an_error_not_silence(tmp_path):
    manifest = read_manifest(model_with_table(tmp_path / "m"))
    with pytest.raises(ModelError, match=r"no threshold table for recogniser 'arcface'.*sface, dlib-resnet"):
        bands_of(manifest, "arcface")


def test_lookup_by_tag_finds_shipped_folders_and_given_manifests(tmp_path):
    models = tmp_path / "models"
    manifest = read_manifest(model_with_table(models / current_model("quality")))  # its folder, by its tag
    lookup = BandLookup(models_dir=models)
    assert lookup.name(manifest.tag, 45.0) == "good" and lookup.name(manifest.tag, 5.0) == "poor"
    assert lookup.for_model("sddfiqa-mfn@7") is None and lookup.for_model("no-tag") is None
    given = BandLookup("dlib-resnet", known=(manifest,), models_dir=tmp_path / "empty")
    assert given.name(manifest.tag, 45.0) == "usable"
