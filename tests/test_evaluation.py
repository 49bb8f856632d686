"""The evaluation: exact ERC under bootstrap weights, thresholds, degradations, peer models, claims."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.erc import DISCARD, FMRS, erc_curve, fnmr_at_fmr
from trainer.evaluation.pairs import all_pairs
from trainer.evaluation.weighted_erc import ErcSet

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _synthetic_set(seed: int = 1, identities: int = 9, dim: int = 16):
    """Identity-structured unit embeddings; per-image noise level (what quality should find)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, identities)
    ids = np.repeat(np.arange(identities), sizes)
    noise = rng.uniform(0.3, 2.5, len(ids))
    vectors = rng.normal(size=(identities, dim))[ids] + rng.normal(size=(len(ids), dim)) * noise[:, None]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ids.astype(str), vectors, noise, rng


def test_fast_erc_equals_the_reference_on_all_pairs_and_on_identity_resamples():
    ids, vectors, noise, rng = _synthetic_set()
    quality = np.round(-noise + rng.normal(scale=0.3, size=len(noise)), 1)  # ties on purpose
    pairs = all_pairs(ids)
    similarities = {"r": pairs.similarities(vectors)}
    erc = ErcSet(pairs, similarities)
    erc.add_method("q", quality)
    mated_q, nonmated_q = pairs.pair_quality(quality)
    mated_s, nonmated_s = similarities["r"]
    for fmr in FMRS:
        reference = erc_curve(mated_s, mated_q, nonmated_s, nonmated_q, fmr)
        np.testing.assert_array_equal(erc.curves("q", (fmr,))["r"][fmr], reference)
    n = pairs.n_identities
    for _ in range(15):
        multiplicity = np.bincount(rng.integers(0, n, n), minlength=n)
        # The resampled pairs written out: mated pairs of a person drawn k times k times, non-mated k·l times.
        first, second = np.divmod(pairs.nonmated_block, n)
        mated_copies = np.repeat(np.arange(len(mated_s)), multiplicity[pairs.mated_block])
        nonmated_copies = np.repeat(np.arange(len(nonmated_s)), multiplicity[first] * multiplicity[second])
        for fmr in FMRS:
            reference = erc_curve(mated_s[mated_copies], mated_q[mated_copies], nonmated_s[nonmated_copies],
                                  nonmated_q[nonmated_copies], fmr,
                                  ties=(erc.tie_mated[mated_copies], erc.tie_nonmated[nonmated_copies]))
            np.testing.assert_array_equal(erc.curves("q", (fmr,), multiplicity)["r"][fmr], reference)


def test_bootstrap_separates_a_useful_quality_from_a_random_one_and_not_from_itself():
    from trainer.evaluation.bootstrap import Bootstrap, identity_draws

    draws = identity_draws(7, 50)
    assert draws.shape == (50, 7) and np.all(draws.sum(axis=1) == 7)
    ids, vectors, noise, rng = _synthetic_set(seed=3, identities=12)
    pairs = all_pairs(ids)
    erc = ErcSet(pairs, {"r": pairs.similarities(vectors)})
    erc.add_method("knows_noise", -noise)
    erc.add_method("random", rng.random(len(noise)))
    erc.add_method("same_again", -noise)
    boot = Bootstrap(erc, fmr=1e-2, replicates=200)
    for method in ("knows_noise", "random", "same_again"):
        boot.run(method)
    better = boot.difference("r", "knows_noise", "random")
    assert better.high < 0, better
    same = boot.difference("r", "knows_noise", "same_again")
    assert same.low == same.high == 0.0
    low, high = boot.interval("r", "random").as_list()
    assert low < high


def test_threshold_table_rows_follow_the_contract():
    from trainer.evaluation.thresholds import threshold_table

    ids, vectors, noise, _ = _synthetic_set(seed=5)
    quality = 50 - 10 * noise
    pairs = all_pairs(ids)
    table = threshold_table("synthetic", quality, pairs, {"a": pairs.similarities(vectors)})
    assert set(table) == {"fmr", "data", "recognizers"} and table["fmr"] == 1e-3
    rows = table["recognizers"]["a"]
    assert [r["quality"] for r in rows] == sorted({r["quality"] for r in rows})
    gram = vectors @ vectors.T
    for row in rows:
        assert set(row) == {"quality", "discarded", "fnmr"}
        kept = np.nonzero(quality >= row["quality"])[0]
        assert row["discarded"] == pytest.approx(1 - len(kept) / len(quality), abs=1e-4)
        mated, nonmated = [], []
        for x in range(len(kept)):  # the remaining pairs, listed one by one
            for y in range(x + 1, len(kept)):
                i, j = kept[x], kept[y]
                (mated if ids[i] == ids[j] else nonmated).append(gram[i, j])
        assert row["fnmr"] == pytest.approx(fnmr_at_fmr(np.array(mated), np.array(nonmated), 1e-3), abs=1e-4)
    assert rows[0]["discarded"] == 0.0 and rows[-1]["discarded"] > 0.3


def test_seed_set_levels_are_unchanged_and_every_ladder_runs_mild_to_severe(seed_set):
    from trainer.degrade import DEGRADATIONS, LEVEL_PARAMS, LEVELS, MILD_STEPS, degrade, ladder
    from trainer.seedset import read_index

    rows = [r for r in read_index(seed_set) if r.kind != "original"][::25]
    for row in rows:
        crop = cv2.imread(str(seed_set / row.original))
        made = degrade(crop, row.kind, row.level, zlib.crc32(f"{row.original}|{row.kind}|{row.level}".encode()))
        assert np.array_equal(made, cv2.imread(str(seed_set / row.path))), row.path
    for kind in DEGRADATIONS:
        steps = np.array(ladder(kind), float)
        assert len(steps) == len(MILD_STEPS[kind]) + len(LEVELS)
        assert list(steps[-3:]) == [LEVEL_PARAMS[kind][level] for level in LEVELS]
        gaps = np.diff(steps)
        assert np.all(gaps > 0) or np.all(gaps < 0), (kind, steps)


def test_degraded_copy_replaces_each_crop_reproducibly(seed_set, tmp_path):
    from trainer.degrade import DEGRADATIONS, ladder
    from trainer.evaluation.heldout import degraded_copy, open_folder

    source = tmp_path / "faces"
    for identity in ("macron", "ardern", "door_man"):
        files = sorted((seed_set / "heldout" / identity).glob("*.png"))[:4]
        (source / identity).mkdir(parents=True)
        for path in files:
            (source / identity / path.name).write_bytes(path.read_bytes())
    clean = open_folder(source)
    first = degraded_copy(clean, tmp_path / "cache1", progress=False)
    second = degraded_copy(clean, tmp_path / "cache2", progress=False)
    assert len(first) == len(clean) and list(first.identities) == list(clean.identities)
    assert first.name == f"{clean.name}+degraded" and not first.clean.any()
    for a, b, original, (kind, strength) in zip(first.paths, second.paths, clean.paths, first.degradation,
                                                strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
        assert kind in DEGRADATIONS and strength in ladder(kind)
        assert not np.array_equal(cv2.imread(a), cv2.imread(original))


def test_qualityface_reimplementation_reproduces_its_own_code(seed_set):
    from engines.paths import sha256_file
    from trainer.evaluation.qualityface import QualityFaceScorer

    reference = json.loads((FIXTURES / "qualityface_reference.json").read_text())
    crops, expected = [], []
    for row in reference["rows"]:
        if row["input"] == "seed":
            path = seed_set / row["seed_set_path"]
            assert sha256_file(path) == row["sha256"], f"{path} changed: re-record the fixture (see its module)"
            crops.append(cv2.imread(str(path)))
        else:  # the reference got this RGB array; our scorer takes BGR
            rgb = np.random.default_rng(row["rng_seed"]).integers(0, 256, (128, 128, 3), dtype=np.uint8)
            crops.append(np.ascontiguousarray(rgb[..., ::-1]))
        expected.append(row["raw"])
    scorer = QualityFaceScorer()
    got = np.concatenate([scorer.score(c[None]) for c in crops])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert np.corrcoef(got, expected)[0, 1] > 0.999


def test_qualityface_checkpoint_must_fit_the_network_exactly(tmp_path):
    import torch

    from engines.errors import ModelError
    from trainer.evaluation.qualityface import checkpoint_path, load_network

    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    assert len(state) == len(load_network().state_dict())
    state.pop(next(k for k in state if k.endswith("classify.bias")))
    broken = tmp_path / "last.pth"
    torch.save(state, broken)
    with pytest.raises(ModelError, match="missing"):
        load_network(broken)


def test_embedding_norm_scores_like_a_quality_scorer(seed_set):
    from engines.embedding_norm import EmbeddingNormScorer
    from trainer.seedset import read_index

    rows = [r for r in read_index(seed_set) if r.split == "graded" and r.kind == "blur" and r.level == 3][:12]
    originals = np.stack([cv2.imread(str(seed_set / r.original)) for r in rows])
    blurred = np.stack([cv2.imread(str(seed_set / r.path)) for r in rows])
    scorer = EmbeddingNormScorer()
    clean, degraded = scorer.score(originals), scorer.score(blurred)
    assert clean.shape == (12,) and clean.dtype == np.float32 and np.all(clean > 0)
    assert np.mean(degraded < clean) >= 0.9, (clean, degraded)
    assert scorer.score(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0,)
    assert scorer.tag == "embedding-norm:sface@2021dec"


@pytest.fixture(scope="module")
def shipped_evaluation(tmp_path_factory) -> tuple[dict, Path, str]:
    """`trainer evaluate` of the shipped model on the seed held-out set, both recognisers (what CI affords)."""
    out = tmp_path_factory.mktemp("eval") / "report.json"
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "evaluate", "--bootstrap", "40", "--out", str(out),
                             "--quiet"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text()), out.parent, result.stdout


def test_trainer_evaluate_on_the_seed_set_writes_the_report_and_figures(shipped_evaluation):
    report, folder, stdout = shipped_evaluation
    assert report["main"] == "seed/heldout"
    methods = {r["method"] for r in report["results"]}
    assert {"random", "face_size", "detector_score", "sharpness", "embedding_norm", "qualityface",
            "pseudo_labels", "model:" + report["model"]} <= methods
    assert {r["recognizer"] for r in report["results"]} == {"sface", "dlib-resnet"}
    bootstrapped = [r for r in report["results"] if r["fmr"] == 1e-3]
    assert all(r["ci_pauc_0.3"][0] <= r["ci_pauc_0.3"][1] for r in bootstrapped)
    assert {r["fmr"] for r in report["results"]} == set(FMRS)
    assert len(report["sets"]["seed/heldout"]["curves"]["sface"]["random"]["0.001"]) == len(DISCARD)
    assert report["thresholds"]["data"] == "seed/heldout"
    assert set(report["thresholds"]["recognizers"]) == {"sface", "dlib-resnet"}
    assert {d["recognizer"] for d in report["differences"]} == {"sface", "dlib-resnet"}
    assert set(report["degradation_response"]) == set(report["degradation"]["kinds"]) and report["claims"]
    for figure in ("report.png", "report-intervals.png", "report-thresholds.png", "report-degradation.png"):
        assert (folder / figure).stat().st_size > 10_000, figure
    assert "Ship criteria" in stdout and "pAUC u≤0.3 [95% CI]" in stdout


def _shipped_report() -> dict:
    from engines.modelfiles import model_dir
    from engines.registry import current_model

    return json.loads((model_dir(current_model("quality")) / "report.json").read_text())


@pytest.mark.parametrize("recognizer", ["sface", "dlib-resnet"])
def test_shipped_model_beats_every_heuristic_baseline_on_the_main_set(recognizer):
    """From the rows of the shipped model's own report on its main held-out set (pins/heldout;
    face size is unknown for its crops). The seed set is too small to rank methods: with dlib the
    detector score is ahead of sddfiqa-mfn-2 there (README); the next test recomputes those rows."""
    report = _shipped_report()
    rows = {r["method"]: r["pauc_0.3"] for r in report["results"]
            if r["data"] == report["main"] and r["recognizer"] == recognizer and r["fmr"] == 1e-3}
    model = rows["model:" + report["model"]]
    for baseline in ("random", "detector_score", "sharpness"):
        assert model < rows[baseline], (baseline, model, rows[baseline])


def test_ci_recomputes_the_shipped_reports_seed_set_figures(shipped_evaluation):
    """`trainer evaluate` in CI gives the seed-set rows the shipped report states, for every method."""
    live, shipped = shipped_evaluation[0], _shipped_report()
    assert live["model"] == shipped["model"]

    def rows(report: dict) -> dict:
        return {(r["recognizer"], r["method"], r["fmr"]): (r["pauc_0.2"], r["pauc_0.3"], r["auc"])
                for r in report["results"] if r["data"] == "seed/heldout"
                and not r["method"].startswith("model:sddfiqa-mfn@1")}

    expected, computed = rows(shipped), rows(live)
    assert set(expected) <= set(computed) and len(expected) >= 2 * 7 * len(FMRS)
    for key, values in expected.items():
        assert computed[key] == pytest.approx(values, abs=1e-5), key


def test_quality_falls_as_heldout_crops_are_degraded_from_mild_steps_on(shipped_evaluation):
    from trainer.degrade import DEGRADATIONS, ladder

    block = shipped_evaluation[0]["degradation"]
    assert set(block["kinds"]) == set(DEGRADATIONS)
    for kind, entry in block["kinds"].items():
        assert entry["strengths"] == [0, *ladder(kind)]
        assert entry["spearman"] <= -0.8, (kind, entry)
        # the recogniser itself finds every step worse than the one before (what "degraded" means)
        assert np.all(np.diff(entry["similarity"]) < 0), (kind, entry["similarity"])


def test_unknown_suite_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "evaluate", "--suite", "nope", "--out",
                             str(tmp_path / "r.json")], capture_output=True, text=True)
    assert result.returncode != 0 and "unknown held-out suite nope" in result.stderr
    assert "Traceback" not in result.stderr


def _anti_model(folder: Path, version: str) -> Path:
    """sddfiqa-mfn-1 with its score turned upside down (100 − q): a model worse than random."""
    import shutil

    import onnx
    from onnx import helper, numpy_helper

    from engines.manifest import read_manifest, write_manifest
    from engines.paths import sha256_file

    source = Path(__file__).resolve().parents[1] / "engines" / "models" / "sddfiqa-mfn-1"
    graph = onnx.load(str(source / "model.onnx"))
    for node in graph.graph.node:
        node.output[:] = ["upright" if name == "quality" else name for name in node.output]
    graph.graph.initializer.append(numpy_helper.from_array(np.array(100.0, np.float32), "hundred"))
    graph.graph.node.append(helper.make_node("Sub", ["hundred", "upright"], ["quality"]))
    folder.mkdir(parents=True)
    onnx.save(graph, str(folder / "model.onnx"))
    manifest = read_manifest(source)
    shutil.copy(source / "manifest.json", folder / "manifest.json")
    write_manifest(folder, manifest.model_copy(update={"version": version, "evaluation": None,
                                                       "sha256": sha256_file(folder / "model.onnx")}))
    return folder


def _copy_model(folder: Path, version: str) -> Path:
    import shutil

    from engines.manifest import read_manifest, write_manifest

    source = Path(__file__).resolve().parents[1] / "engines" / "models" / "sddfiqa-mfn-1"
    shutil.copytree(source, folder)
    write_manifest(folder, read_manifest(folder).model_copy(update={"version": version, "evaluation": None}))
    return folder


def test_rebuild_step_5_promotes_only_a_model_that_beats_the_current_one(seed_set, tmp_path):
    from engines.manifest import read_manifest
    from engines.registry import set_current
    from trainer.evaluation.promotion import evaluate_candidate

    models = tmp_path / "models"
    _anti_model(models / "sddfiqa-mfn-90", "90")
    set_current("quality", "sddfiqa-mfn-90", models)
    good = evaluate_candidate(_copy_model(tmp_path / "good", "91"), seed_set / "heldout", models, ("sface",),
                              progress=False, replicates=20, degradation=False)
    assert good.current_score is not None and good.score < good.current_score and good.better
    assert "sddfiqa-mfn@90" in good.report["compared_models"]

    _copy_model(models / "sddfiqa-mfn-92", "92")
    set_current("quality", "sddfiqa-mfn-92", models)
    bad = evaluate_candidate(_anti_model(tmp_path / "bad", "93"), seed_set / "heldout", models, ("sface",),
                             progress=False, replicates=20, degradation=False)
    assert bad.score > bad.current_score and not bad.better
    evaluation = read_manifest(tmp_path / "bad").evaluation
    assert evaluation["thresholds"]["recognizers"]["sface"] and evaluation["claims"]["model"] == "sddfiqa-mfn@93"
    assert (tmp_path / "bad" / "report.json").is_file() and (tmp_path / "bad" / "report.png").is_file()


def test_a_main_set_other_than_the_seed_set_is_evaluated_with_its_companions(seed_set, tmp_path):
    """Step 5 on a held-out folder that is not the seed set also evaluates the seed set and a degraded
    copy of the folder (for the report and the ship claims); the decision uses the main set alone."""
    import shutil

    from trainer.evaluation.model_card import decision_score
    from trainer.evaluation.promotion import evaluate_candidate

    heldout = tmp_path / "heldout"
    for identity in ("macron", "ardern", "biden", "sunak", "door_man"):
        (heldout / identity).mkdir(parents=True)
        for path in sorted((seed_set / "heldout" / identity).iterdir())[:8]:
            shutil.copy(path, heldout / identity / path.name)
    try:
        verdict = evaluate_candidate(_copy_model(tmp_path / "candidate", "95"), heldout, tmp_path / "models",
                                     ("sface",), progress=False, replicates=20, degradation=False)
    finally:  # the degraded copy of this temporary folder has no use after the test
        from engines.paths import cache_root

        for folder in (cache_root() / "eval").glob(f"{str(heldout).replace('/', '-')}-degraded-v*"):
            shutil.rmtree(folder)
    report = verdict.report
    assert len(report["sets"]) == 3 and "seed/heldout" in report["sets"] and report["main"] in report["sets"]
    degraded = next(name for name in report["sets"] if name not in ("seed/heldout", report["main"]))
    crops = sum(1 for _ in heldout.glob("*/*"))
    assert report["sets"][degraded]["crops"] == report["sets"][report["main"]]["crops"] == crops
    assert report["sets"]["seed/heldout"]["crops"] > crops
    assert {r["data"] for r in report["results"]} == set(report["sets"])
    assert verdict.current_score is None and verdict.score == decision_score(report)


def test_an_experiment_loop_compares_candidates_on_a_prepared_set(tmp_path):
    from trainer.evaluate import SetEvaluation

    seed = SetEvaluation.open("seed", recognizers=("sface",), replicates=30, progress=False)
    worse = seed.compare(str(_anti_model(tmp_path / "anti", "94")))
    verdict = worse["recognizers"]["sface"]
    assert worse["model"] == "model:sddfiqa-mfn@94" and worse["data"] == "seed/heldout"
    assert verdict["best_other"] != worse["model"] and verdict["difference"] > 0 and verdict["difference_ci"][1] > 0
    seed.drop(worse["model"])
    assert worse["model"] not in seed.scores
    better = seed.compare("sddfiqa-mfn-1")["recognizers"]["sface"]
    assert better["pauc_0.3"] < verdict["pauc_0.3"]
