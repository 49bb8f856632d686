"""Everything around TensorRT that runs without a GPU: plan choice, fallback, API, buffers.

No GPU and no full TensorRT exist here. What stands in for them, and only for them: the
running TensorRT version and GPU (``tensorrt_runtime``, an input of the plan choice), a
fake execution context and CUDA memory for the buffer logic, and a fake builder for the
precision flags. The runtime API the backend calls is checked against the real TensorRT
lean runtime bindings (installed by ``make setup``). The real plans are built and
compared with ONNX Runtime by ``tests/test_model.py`` on a GPU machine with TensorRT.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.backends import tensorrt as backend
from engines.errors import ModelError
from engines.manifest import read_manifest, write_manifest
from engines.plans import TensorRTRuntime, plan_file, plan_key, record_path, recorded_plans, select_plan, write_record
from engines.registry import current_model
from trainer.seedset import read_index

SHIPPED = Path(__file__).resolve().parents[1] / "engines" / "models"
HERE = TensorRTRuntime("10.8.0.43", "8.9", "NVIDIA L4")  # the machine the choice is made for
MODEL_SHA = "ab" * 32  # the model file the plans of the selection tests were built from


def _entry(precision: str, version: str, capability: str, file: str | None = None,
           model_sha256: str = MODEL_SHA) -> dict:
    return {"file": file or plan_file(plan_key(precision, version, capability)), "precision": precision,
            "tensorrt": version, "compute_capability": capability, "gpu": "some GPU", "max_batch": 64,
            "model_sha256": model_sha256}


def _with_files(directory: Path, engines: dict[str, dict]) -> dict[str, dict]:
    for entry in engines.values():
        (directory / entry["file"]).write_bytes(b"not a real plan")
    return engines


# --- which plan ------------------------------------------------------------------------------

def test_a_plan_is_chosen_only_for_the_running_version_and_capability(tmp_path):
    engines = _with_files(tmp_path, {
        "old-version": _entry("fp16", "10.3.0.26", "8.9"),
        "other-gpu": _entry("fp16", "10.8.0.43", "8.6"),
        "fits-fp32": _entry("fp32", "10.8.0.43", "8.9"),
    })
    choice = select_plan(engines, tmp_path, HERE, MODEL_SHA)
    assert choice.key == "fits-fp32" and choice.path == tmp_path / engines["fits-fp32"]["file"]
    engines["fits-fp16"] = _with_files(tmp_path, {"x": _entry("fp16", "10.8.0.43", "8.9")})["x"]
    assert select_plan(engines, tmp_path, HERE, MODEL_SHA).key == "fits-fp16"  # the default precision first


def test_no_fitting_plan_names_every_reason(tmp_path):
    engines = _with_files(tmp_path, {
        "old-version": _entry("fp16", "10.3.0.26", "8.9"),
        "other-gpu": _entry("fp16", "10.8.0.43", "8.6"),
    })
    engines["not-built-here"] = _entry("fp32", "10.8.0.43", "8.9")  # recorded, file absent
    engines["unrecorded"] = {"file": "x.plan", "precision": "fp16"}
    engines["other-model"] = _entry("fp16", "10.8.0.43", "8.9", file="other.plan", model_sha256="cd" * 32)
    engines["torn"] = {"unreadable": "model.torn.plan.json: Expecting value: line 1 column 1 (char 0)"}
    choice = select_plan(engines, tmp_path, HERE, MODEL_SHA)
    assert choice.path is None
    assert "TensorRT 10.8.0.43" in choice.reason and "compute capability 8.9" in choice.reason
    assert "built with TensorRT 10.3.0.26" in choice.reason
    assert "built for compute capability 8.6" in choice.reason
    assert "is missing" in choice.reason and "trainer build" in choice.reason
    assert "records no TensorRT version" in choice.reason
    assert f"built from another model file (sha256 {'cd' * 6}" in choice.reason
    assert "torn: its record is unreadable" in choice.reason
    assert "no TensorRT plan is built" in select_plan({}, tmp_path, HERE, MODEL_SHA).reason


def test_a_plan_changed_after_its_build_is_refused(tmp_path):
    engines = _with_files(tmp_path, {"fits": _entry("fp16", "10.8.0.43", "8.9")})
    engines["fits"]["sha256"] = "0" * 64
    assert "changed since it was built" in select_plan(engines, tmp_path, HERE, MODEL_SHA).reason


def test_records_are_read_from_beside_the_plans(tmp_path):
    key = plan_key("fp16", HERE.version, HERE.compute_capability)
    entry = _with_files(tmp_path, {key: _entry("fp16", HERE.version, HERE.compute_capability)})[key]
    write_record(tmp_path / entry["file"], entry)
    (tmp_path / "model.torn.plan.json").write_text('{"file": "model.torn.pl')  # a record cut short
    records = recorded_plans(tmp_path)
    assert records[key] == entry and "unreadable" in records["torn"]
    assert select_plan(records, tmp_path, HERE, MODEL_SHA).key == key


# --- fallback and strictness ------------------------------------------------------------------

@pytest.fixture
def model_copy(tmp_path) -> Path:
    """The current quality model, copied: plans and their records go into the copy only."""
    target = tmp_path / "model"
    shutil.copytree(SHIPPED / current_model("quality"), target)
    return target


def _record(model: Path, engines: dict[str, dict]) -> None:
    """Plans (stand-in bytes) with their records beside them, built from ``model``'s own file."""
    model_sha256 = read_manifest(model).sha256
    for entry in _with_files(model, engines).values():
        write_record(model / entry["file"], {**entry, "model_sha256": model_sha256})


def _crops(seed_set: Path, count: int) -> np.ndarray:
    rows = [r for r in read_index(seed_set) if r.split == "heldout"][::7][:count]
    return np.stack([cv2.imread(str(seed_set / r.path)) for r in rows])


def _quality_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "engines.quality" and r.levelno >= logging.WARNING]


def test_auto_falls_back_with_one_warning_when_no_plan_fits(model_copy, seed_set, monkeypatch, caplog):
    from engines.quality import QualityScorer

    _record(model_copy, {"fp16-elsewhere": _entry("fp16", "10.3.0.26", "8.6")})
    monkeypatch.setattr(backend, "tensorrt_runtime", lambda device=0: (HERE, ""))
    with caplog.at_level(logging.INFO):
        scorer = QualityScorer(str(model_copy), backend="auto")
    warnings = _quality_warnings(caplog)
    assert scorer.backend_name == "onnxruntime" and len(warnings) == 1
    assert "10.3.0.26" in warnings[0] and "10.8.0.43" in warnings[0] and "8.6" in warnings[0]
    crops = _crops(seed_set, 8)
    reference = QualityScorer(str(model_copy), backend="onnxruntime")
    np.testing.assert_array_equal(scorer.score(crops), reference.score(crops))
    with pytest.raises(ModelError, match=r"TensorRT backend requested .* built with TensorRT 10\.3\.0\.26"):
        QualityScorer(str(model_copy), backend="tensorrt")


def test_a_plan_that_fails_to_load_falls_back_with_the_backends_reason(model_copy, monkeypatch, caplog):
    from engines.quality import QualityScorer

    key = plan_key("fp16", HERE.version, HERE.compute_capability)
    _record(model_copy, {key: _entry("fp16", HERE.version, HERE.compute_capability)})
    monkeypatch.setattr(backend, "tensorrt_runtime", lambda device=0: (HERE, ""))
    # The plan fits on paper; loading it raises ModelError in TensorRTBackend (here: no
    # TensorRT/pycuda; on a GPU machine: bytes that do not deserialize).
    with pytest.raises(ModelError) as raised:
        backend.TensorRTBackend(model_copy / f"model.{key}.plan")
    with caplog.at_level(logging.INFO):
        scorer = QualityScorer(str(model_copy), backend="auto")
    warnings = _quality_warnings(caplog)
    assert scorer.backend_name == "onnxruntime" and len(warnings) == 1
    assert f"plan {key}" in warnings[0] and str(raised.value) in warnings[0]
    with pytest.raises(ModelError, match=re.escape(str(raised.value))):
        QualityScorer(str(model_copy), backend="tensorrt")


def test_lean_runtime_alone_is_refused_with_its_reason():
    pytest.importorskip("tensorrt_lean_bindings", reason="TensorRT lean runtime not installed (make setup)")
    if backend._import_tensorrt() is not None:
        pytest.skip("the full tensorrt package is installed here")
    reason = backend.tensorrt_unavailable_reason()
    assert reason and "lean runtime" in reason and "version-compatible" in reason


def test_a_cpu_machine_without_plans_says_so_without_a_warning(caplog):
    from engines.quality import QualityScorer

    if backend.tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT runs here")
    with caplog.at_level(logging.INFO):
        scorer = QualityScorer(backend="auto")
    assert scorer.backend_name == "onnxruntime" and not _quality_warnings(caplog)
    assert any("on ONNX Runtime" in r.getMessage() for r in caplog.records if r.name == "engines.quality")


# --- the runtime API, checked against the lean runtime's bindings -------------------------------

@pytest.fixture(scope="module")
def trt():
    return pytest.importorskip("tensorrt_lean_bindings", reason="TensorRT lean runtime not installed (make setup)")


def _short(type_text: str) -> str:
    return re.sub(r"[\w.]+\.(\w+)", r"\1", type_text.strip())


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[(<"
        depth -= char in "])>"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def _overloads(method, name: str) -> list[tuple[list[tuple[str, bool]], str]]:
    """(parameters as (name, has default), short return type) of each pybind11 overload."""
    found = []
    for match in re.finditer(rf"{re.escape(name)}\((.*)\) -> (.+)", method.__doc__ or ""):
        params = [(p.split(":")[0].strip(), "=" in p) for p in _split_top_level(match.group(1))]
        found.append(([p for p in params if p[0] != "self"], _short(match.group(2))))
    return found


def test_runtime_calls_match_the_bindings_signatures(trt):
    for qualified, declared in backend.RUNTIME_API.items():
        cls_name, member = qualified.split(".")
        owner = getattr(trt, cls_name)
        assert hasattr(owner, member), f"{qualified} missing in TensorRT {trt.__version__}"
        attribute = getattr(owner, member)
        if declared == "property":
            assert isinstance(attribute, property), f"{qualified} is not a property"
            continue
        wanted = re.fullmatch(r"\((.*)\) -> (.+)", declared)
        assert wanted, f"bad declaration {declared!r}"
        names = [n.strip() for n in wanted.group(1).split(",") if n.strip()]
        overloads = _overloads(attribute, member)
        assert overloads, f"no signature in the docstring of {qualified}"
        assert any([n for n, _ in params[: len(names)]] == names and all(d for _, d in params[len(names):])
                   and returns == wanted.group(2) for params, returns in overloads), \
            f"{qualified}: declared {declared}, bindings have {overloads}"
    for enum, members in backend.RUNTIME_ENUMS.items():
        owner = trt
        for part in enum.split("."):
            owner = getattr(owner, part)
        for member in members:
            assert hasattr(owner, member), f"{enum}.{member} missing in TensorRT {trt.__version__}"
    assert hasattr(trt.BuilderFlag, "TF32") and hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE")


def test_backend_uses_only_declared_members_and_checks_every_boolean_result():
    tree = ast.parse(Path(backend.__file__).read_text())
    receivers = {"engine", "context", "runtime", "_engine", "_context", "_runtime"}
    declared = {q.split(".")[1] for q in backend.RUNTIME_API}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            value = node.value
            name = value.id if isinstance(value, ast.Name) else value.attr if isinstance(value, ast.Attribute) else ""
            if name in receivers:
                used.add(node.attr)
    assert used <= declared, f"undeclared TensorRT calls: {used - declared}"
    assert {"set_input_shape", "set_tensor_address", "execute_async_v3", "get_tensor_profile_shape"} <= used
    boolean = {q.split(".")[1] for q, d in backend.RUNTIME_API.items() if d.endswith("-> bool")}
    checked = {n.attr for test in (node.test for node in ast.walk(tree) if isinstance(node, ast.If))
               for n in ast.walk(test) if isinstance(n, ast.Attribute)}
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert boolean & calls <= checked, f"boolean results ignored: {(boolean & calls) - checked}"
    enum_uses = {(n.value.attr, n.attr) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Attribute) and isinstance(n.value.value, ast.Name)
                 and n.value.value.id == "trt" and n.value.attr in ("DataType", "TensorIOMode", "Logger")}
    for enum, member in enum_uses:
        declared_members = backend.RUNTIME_ENUMS.get(enum) or backend.RUNTIME_ENUMS.get(f"I{enum}.Severity", ())
        assert member in declared_members, f"trt.{enum}.{member} is not declared"


def test_dtype_table_covers_every_type_numpy_can_hold(trt, monkeypatch):
    unsupported = set()
    for name, dtype in trt.DataType.__members__.items():
        try:
            np_type = backend.numpy_dtype(trt, dtype, "x")
        except ModelError as exc:
            assert "tensor x" in str(exc) and name in str(exc)
            unsupported.add(name)
            continue
        assert np_type.itemsize == dtype.itemsize, name
    assert unsupported <= {"FP8", "FP4", "INT4", "E8M0"}, unsupported
    assert backend.numpy_dtype(trt, trt.DataType.INT64, "x") == np.int64
    assert backend.numpy_dtype(trt, trt.DataType.UINT8, "x") == np.uint8
    assert backend.numpy_dtype(trt, trt.DataType.BF16, "x").name == "bfloat16"
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # BF16 without a numpy type: a clear error
    with pytest.raises(ModelError, match=r"tensor x is BF16.*ml_dtypes"):
        backend.numpy_dtype(trt, trt.DataType.BF16, "x")


# --- buffers: a fake execution context and CUDA memory (no GPU here) ------------------------------

class FakeCuda:
    """pycuda.driver's memory calls over host byte arrays; counts every allocation."""

    def __init__(self) -> None:
        self.pinned = self.device = 0
        self.memory: dict[int, np.ndarray] = {}

    class Allocation:
        def __init__(self, owner: FakeCuda, nbytes: int) -> None:
            self.address = 0x1000 * (len(owner.memory) + 1)
            owner.memory[self.address] = np.zeros(nbytes, np.uint8)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            pass

    def pagelocked_empty(self, count: int, dtype) -> np.ndarray:
        self.pinned += 1
        return np.empty(count, dtype)

    def mem_alloc(self, nbytes: int) -> FakeCuda.Allocation:
        self.device += 1
        return FakeCuda.Allocation(self, nbytes)

    def memcpy_htod_async(self, device, host: np.ndarray, stream) -> None:
        raw = host.view(np.uint8).ravel()
        self.memory[int(device)][: raw.size] = raw

    def memcpy_dtoh_async(self, host: np.ndarray, device, stream) -> None:
        raw = host.view(np.uint8).reshape(-1)
        raw[:] = self.memory[int(device)][: raw.size]


class FakeContext:
    """An execution context of a plan computing one score per image (the mean), batch 1..8."""

    def __init__(self, cuda: FakeCuda, fail_execution: bool = False) -> None:
        self.cuda, self.fail_execution = cuda, fail_execution
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        if not (1 <= shape[0] <= 8 and tuple(shape[1:]) == (3, 4, 4)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes.get(name) or (self.shapes["input"][0], 1)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if self.fail_execution:
            return False
        shape = self.shapes["input"]
        count = int(np.prod(shape))
        images = self.cuda.memory[self.addresses["input"]][: count * 4].view(np.float32).reshape(shape)
        scores = images.reshape(shape[0], -1).mean(axis=1).astype(np.float32)
        self.cuda.memory[self.addresses["score"]][: scores.nbytes] = scores.view(np.uint8)
        return True


class FakeEngine:
    def __init__(self, trt) -> None:
        self._trt = trt
        self.num_io_tensors = 2

    def get_tensor_name(self, index: int) -> str:
        return ("input", "score")[index]

    def get_tensor_mode(self, name: str):
        return self._trt.TensorIOMode.INPUT if name == "input" else self._trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str):
        return self._trt.DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple]:
        return [(1, 3, 4, 4), (4, 3, 4, 4), (8, 3, 4, 4)]


def _plan_io(trt, fail_execution: bool = False):
    cuda = FakeCuda()
    stream = types.SimpleNamespace(handle=7, synchronize=lambda: None)
    return backend.PlanIO(trt, cuda, FakeEngine(trt), FakeContext(cuda, fail_execution), stream), cuda


def test_buffers_are_allocated_once_and_reused_for_every_batch(trt):
    io, cuda = _plan_io(trt)
    assert io.max_batch == 8 and (cuda.pinned, cuda.device) == (2, 2)
    rng = np.random.default_rng(0)
    for batch in (1, 5, 8, 20, 3):
        images = rng.normal(size=(batch, 3, 4, 4)).astype(np.float32)
        scores = backend.run_in_chunks(io, {"input": images})["score"]
        np.testing.assert_allclose(scores[:, 0], images.reshape(batch, -1).mean(axis=1), rtol=1e-6)
    assert (cuda.pinned, cuda.device) == (2, 2)  # nothing allocated per batch


def test_a_refused_shape_or_a_failed_execution_is_an_error(trt):
    io, _ = _plan_io(trt)
    with pytest.raises(ModelError, match=r"refused shape \(9, 3, 4, 4\) for input input"):
        io.run({"input": np.zeros((9, 3, 4, 4), np.float32)})  # beyond the profile
    failing, _ = _plan_io(trt, fail_execution=True)
    with pytest.raises(ModelError, match="execution failed"):
        failing.run({"input": np.zeros((2, 3, 4, 4), np.float32)})


# --- the builder's precision flags: a fake builder (no full TensorRT here) ------------------------

class FakeBuilderConfig:
    def __init__(self) -> None:
        self.flags = {"TF32"}  # TensorRT turns TF32 on by default

    def set_memory_pool_limit(self, pool, size) -> None:
        pass

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag)

    def get_flag(self, flag) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile) -> int:
        return 0


def _fake_tensorrt(built: list) -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = HERE.version
    module.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=2: None})
    module.BuilderFlag = types.SimpleNamespace(TF32="TF32")
    module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    network = types.SimpleNamespace(get_input=lambda i: types.SimpleNamespace(name="input"))

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            return network

        def create_builder_config(self):
            config = FakeBuilderConfig()
            built.append(config)
            return config

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, net, config):
            return b"plan"

    module.Builder = Builder
    module.OnnxParser = lambda net, logger: types.SimpleNamespace(parse=lambda data: True, num_errors=0)
    return module


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True), ("fp16", True)])
def test_an_fp32_plan_never_runs_tf32(tmp_path, monkeypatch, precision, tf32):
    from engines import build

    configs: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(configs))
    monkeypatch.setattr(backend, "tensorrt_runtime", lambda device=0: (HERE, ""))
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    plan = build.build_plan(tmp_path / "model.onnx", tmp_path / "model.plan", (3, 112, 112), precision, 8)
    assert configs[0].get_flag("TF32") is tf32 and plan.tf32 is tf32
    assert plan.precision == precision and plan.compute_capability == HERE.compute_capability
    assert len(plan.sha256) == 64


# --- where trainer build records a plan ---------------------------------------------------------

def test_build_records_the_plan_beside_it_and_changes_no_tracked_file(model_copy, monkeypatch):
    """The plan and its record are written beside the model, both git-ignored; the manifest is untouched."""
    from trainer.build import build_model

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt([]))
    monkeypatch.setattr(backend, "tensorrt_runtime", lambda device=0: (HERE, ""))
    manifest_before = (model_copy / "manifest.json").read_bytes()
    plan = build_model(str(model_copy), "fp32", 8)
    assert (model_copy / "manifest.json").read_bytes() == manifest_before
    key = plan_key("fp32", HERE.version, HERE.compute_capability)
    records = recorded_plans(model_copy)
    assert list(records) == [key] and record_path(plan.path).is_file()
    manifest = read_manifest(model_copy)
    assert records[key]["model_sha256"] == manifest.sha256 and records[key]["sha256"] == plan.sha256
    assert (records[key]["tensorrt"], records[key]["compute_capability"]) == (HERE.version, HERE.compute_capability)
    assert select_plan(records, model_copy, HERE, manifest.sha256).path == plan.path
    repo = SHIPPED.parents[1]
    for made in (plan.path, record_path(plan.path)):  # the same files in the shipped model's folder: ignored
        shipped = (SHIPPED / current_model("quality") / made.name).relative_to(repo)
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", str(shipped)], cwd=repo).returncode == 0


def test_an_older_manifests_engines_block_is_ignored_and_never_written(model_copy, monkeypatch, caplog):
    from engines.quality import QualityScorer

    key = plan_key("fp16", HERE.version, HERE.compute_capability)
    raw = json.loads((model_copy / "manifest.json").read_text())
    raw["engines"] = _with_files(model_copy, {key: _entry("fp16", HERE.version, HERE.compute_capability,
                                                          model_sha256=raw["sha256"])})
    (model_copy / "manifest.json").write_text(json.dumps(raw))
    manifest = read_manifest(model_copy)  # still a valid manifest
    monkeypatch.setattr(backend, "tensorrt_runtime", lambda device=0: (HERE, ""))
    with caplog.at_level(logging.INFO):
        scorer = QualityScorer(str(model_copy), backend="auto")
    assert scorer.backend_name == "onnxruntime"
    assert "no TensorRT plan is built" in _quality_warnings(caplog)[0]  # the manifest's entry was not tried
    write_manifest(model_copy, manifest)
    assert "engines" not in json.loads((model_copy / "manifest.json").read_text())
