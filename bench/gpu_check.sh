#!/usr/bin/env bash
# GPU checks, for a machine with an NVIDIA GPU (run from the repository root):
#   1. NVDEC: decode the 1080p25 sample through PyAV on NVDEC (shared primary context) vs software, frames/s;
#   2. the gate's sources: the process probes NVDEC once, every camera decodes on it ("h264 (nvdec)"), and
#      three cameras on one shared CUDA context use less GPU memory than with a context each;
#   3. the fallback on a real failure: with CUDA_VISIBLE_DEVICES="" the device cannot be created, `auto`
#      decodes in software and `cuda` stops the camera with the cause;
#   4. TensorRT (when the full tensorrt package and pycuda are installed): the GPU tests build fp16 and
#      fp32 plans of the current model in a temporary copy and compare them with ONNX Runtime.
# Writes nothing tracked: the 1080p clip goes to the cache, plans to pytest's temporary folders.
# Prints what it saw; paste it into bench/README.md with the device and the date.
set -uo pipefail
PY=${PYTHON:-python3}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"

# VIDEO=path overrides the clip (a quick dry run on any machine).
[ -n "${VIDEO:-}" ] || VIDEO=$($PY - <<'PYEOF'
import sys
sys.path.insert(0, "bench")
from engines.paths import cache_root
from gate_cpu import make_1080p
from trainer.media import gather_media

media = gather_media(cache_root() / "media", progress=False)
print(make_1080p(media["woman_pexels"], cache_root() / "bench" / "woman_1080p25_60s.mp4"))
PYEOF
)
export VIDEO

echo "== 1. NVDEC through PyAV"
$PY - <<'PYEOF'
import os
import time

import av

from gate.nvdec import SHARED_CONTEXT

print("FFmpeg device types built in:", av.codec.hwaccel.hwdevices_available())


def decode(hwaccel):
    kwargs = {"hwaccel": av.codec.hwaccel.HWAccel(device_type="cuda", options=SHARED_CONTEXT,
                                                  allow_software_fallback=False)} if hwaccel else {}
    with av.open(os.environ["VIDEO"], **kwargs) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        started, frames = time.perf_counter(), 0
        for frame in container.decode(stream):
            if frames % 5 == 0:  # as the gate: one frame in five becomes the detector's BGR image
                frame.to_ndarray(format="bgr24", width=640, height=360, interpolation="AREA")
            frames += 1
        return frames / (time.perf_counter() - started), stream.codec_context.pix_fmt


rate, _ = decode(False)
print(f"software decode, 1 in 5 frames to bgr24@640: {rate:.0f} frames/s")
try:
    rate, pix_fmt = decode(True)
    print(f"NVDEC decode,    1 in 5 frames to bgr24@640: {rate:.0f} frames/s (decoder pixel format {pix_fmt})")
except Exception as exc:
    print(f"NVDEC unavailable: {type(exc).__name__}: {exc}")
PYEOF

# Three cameras of one process, each decoding the clip from the start; prints the decoder names and
# the device's used memory while all three decode. $1 = "shared" (the gate) or "own" (a context each).
cameras() {
  $PY - "$1" <<'PYEOF'
import os
import subprocess
import sys
import threading

from gate import nvdec
from gate.config import SourceConfig
from gate.source import CameraSource

if sys.argv[1] == "own":
    nvdec.SHARED_CONTEXT = {}  # what FFmpeg does unless told: cuCtxCreate per device


def used_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return int(out) if out.isdigit() else None


before = used_mib()
stop, ready, states, results = threading.Event(), threading.Barrier(4), [], {}


def camera(index: int) -> None:
    source = CameraSource(os.environ["VIDEO"], SourceConfig(realtime_files=False), stop,
                          on_state=lambda state, reason: states.append((index, state, reason)))
    try:
        for count, _ in enumerate(source.frames()):
            if count == 50:
                ready.wait(60)  # all three decoding at once
            if count == 100:
                break
    except threading.BrokenBarrierError:
        pass
    results[index] = source.decoder or f"none: {states}"


threads = [threading.Thread(target=camera, args=(i,)) for i in range(3)]
for thread in threads:
    thread.start()
try:
    ready.wait(120)
except threading.BrokenBarrierError:
    print("the cameras did not all decode: see their states below")
during = used_mib()
for thread in threads:
    thread.join(300)
print(f"{sys.argv[1]:>6} contexts: decoders {sorted(results.values())}, probe: {nvdec.NVDEC.status()}")
memory = f"{during - before} MiB" if before is not None and during is not None else "unknown (no nvidia-smi)"
print(f"{sys.argv[1]:>6} contexts: GPU memory used by 3 decoding cameras: {memory}")
PYEOF
}

echo "== 2. the gate's sources on NVDEC"
cameras shared
cameras own

echo "== 3. fallback when the device cannot be created (CUDA_VISIBLE_DEVICES=\"\")"
CUDA_VISIBLE_DEVICES="" $PY - <<'PYEOF'
import os
import threading

from gate import nvdec
from gate.config import SourceConfig
from gate.source import CameraSource

print("probe:", nvdec.NVDEC.status())
for mode in ("auto", "cuda"):
    states = []
    stop = threading.Event()
    source = CameraSource(os.environ["VIDEO"], SourceConfig(hwaccel=mode, realtime_files=False), stop,
                          on_state=lambda state, reason: states.append((state, reason)))
    for count, _ in enumerate(source.frames()):
        if count == 25:
            break
    print(f"hwaccel: {mode}: {states}")
PYEOF

echo "== 4. TensorRT"
$PY - <<'PYEOF'
from engines.backends.tensorrt import tensorrt_runtime
from engines.build import build_unavailable_reason

runtime, reason = tensorrt_runtime()
print("TensorRT runtime:", runtime or reason)
print("TensorRT builder:", build_unavailable_reason() or "available")
PYEOF
if $PY -c "from engines.build import build_unavailable_reason as r; raise SystemExit(bool(r()))"; then
  $PY -m pytest -q -rs tests/test_model.py -k tensorrt_scores tests/test_tensorrt.py
fi
