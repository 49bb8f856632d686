#!/usr/bin/env bash
# GPU checks, for a machine with an NVIDIA GPU (run from the repository root):
#   1. NVDEC: decode the 1080p25 sample through PyAV with hwaccel=cuda vs software, frames/s;
#   2. the gate's source picks NVDEC (and falls back silently when it cannot);
#   3. TensorRT (when the tensorrt package and pycuda are installed): build the current
#      quality model's plan and compare TensorRT scores with ONNX Runtime's.
# Prints what it saw; paste it into bench/README.md with the device and the date.
set -uo pipefail
PY=${PYTHON:-python3}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
$PY - <<'PYEOF'
import time
import av
from engines.paths import cache_root
from trainer.media import gather_media
import importlib.util, sys
sys.path.insert(0, "bench")
from gate_cpu import make_1080p

media = gather_media(cache_root() / "media", progress=False)
video = make_1080p(media["woman_pexels"], cache_root() / "bench" / "woman_1080p25_60s.mp4")
print("hwdevices:", av.codec.hwaccel.hwdevices_available())

def decode(hwaccel):
    kwargs = {"hwaccel": av.codec.hwaccel.HWAccel(device_type="cuda", allow_software_fallback=False)} if hwaccel else {}
    with av.open(str(video), **kwargs) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        started, frames = time.perf_counter(), 0
        for frame in container.decode(stream):
            if frames % 5 == 0:  # as the gate: one frame in five becomes the detector's BGR image
                frame.to_ndarray(format="bgr24", width=640, height=360, interpolation="AREA")
            frames += 1
        return frames / (time.perf_counter() - started)

print(f"software decode, 1 in 5 frames to bgr24@640: {decode(False):.0f} frames/s")
try:
    print(f"NVDEC decode, 1 in 5 frames to bgr24@640:    {decode(True):.0f} frames/s")
except Exception as exc:
    print(f"NVDEC unavailable: {type(exc).__name__}: {exc}")
PYEOF
$PY - <<'PYEOF'
from engines.build import build_unavailable_reason
reason = build_unavailable_reason()
print("TensorRT:", reason or "available")
PYEOF
if $PY -c "from engines.build import build_unavailable_reason as r; raise SystemExit(bool(r()))"; then
  $PY -m trainer.cli build --precision fp16 && $PY -m pytest -q tests/test_model.py -k tensorrt
fi
