"""Benchmark: the gate's CPU with its console on, idle and with the page open, one 1080p25 RTSP camera.

Serves the 1080p25 H.264 file of ``bench/gate_cpu.py`` with the test RTSP server and runs
``gate run`` as its own process for each case, measuring that process's user + system
CPU seconds (``/proc/PID/stat``, all threads) over the same window of ``--seconds`` after
``--warmup`` seconds:

  (a) console off (``http.port`` unset);
  (b) console on, nobody connected (the feed thread follows the streams);
  (c) console on with the page open in headless Chromium (Debian's, through Selenium):
      the page polls the camera list every 2 s, holds the event stream and loads face
      images as events arrive;
  (d) console on with ``--sse-clients`` scripts holding the event stream open.

Only the gate process is measured (the browser's own CPU is not the gate's). The cases
run in interleaved rounds (``--repeat``), so a change in the machine's load spreads over
all of them; each case reports its median. The last line is ``ratio=<c/a>``: what an open
page costs the gate.

    python bench/console_cpu.py [--seconds 30] [--warmup 10] [--repeat 3] [--sse-clients 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gate_cpu import _cpu_now, make_1080p  # noqa: E402


def _wait_http(url: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the gate exited before its console came up")
        try:
            if httpx.get(url + "api/gate", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # the gate is loading its models
    raise RuntimeError(f"no console at {url}")


def _sse_client(url: str, stop: threading.Event, received: list[int]) -> None:
    import httpx

    with httpx.stream("GET", url + "api/events/stream", timeout=None) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                received.append(1)
            if stop.is_set():
                return


def measure(label: str, config: Path, redis_url: str, port: int | None, warmup: float, window: float, env: dict,
            browser: bool = False, sse_clients: int = 0) -> tuple[str, float, int]:
    """CPU seconds of ``gate run`` in ``window`` after ``warmup``, with the given clients attached."""
    from tests.support.browser import Browser

    process = subprocess.Popen([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                                redis_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    chromium, stop, received = None, threading.Event(), []
    try:
        if port is not None:
            url = f"http://127.0.0.1:{port}/"
            _wait_http(url, process)
            if browser:
                chromium = Browser(1366, 900)
                chromium.driver.get(url)
            for _ in range(sse_clients):
                threading.Thread(target=_sse_client, args=(url, stop, received), daemon=True).start()
        time.sleep(warmup)  # the measured process runs meanwhile; nothing to synchronise on
        start = _cpu_now(process.pid)
        time.sleep(window)
        used = _cpu_now(process.pid) - start
        seen = len(received)
        if chromium is not None:
            seen = chromium.driver.execute_script("return document.querySelectorAll('.tile img').length")
    finally:
        stop.set()
        if chromium is not None:
            chromium.quit()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return label, used, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    parser.add_argument("--sse-clients", type=int, default=10, help="event-stream clients in case (d)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of the four cases")
    args = parser.parse_args()
    from engines.paths import cache_root
    from engines.samples import gather_media
    from tests.support.servers import free_port, start_redis, start_rtsp

    media = gather_media(cache_root() / "media", progress=False)
    video = make_1080p(media["woman_pexels"], cache_root() / "bench" / "woman_1080p25_60s.mp4")
    rtsp = start_rtsp({"cam": video})
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    redis_server = start_redis(work / "redis")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cases = (("console off", False, False, 0), ("console on, idle", True, False, 0),
             ("console on, page open in Chromium", True, True, 0),
             (f"console on, {args.sse_clients} SSE clients", True, False, args.sse_clients))
    runs: dict[str, list[tuple[float, int]]] = {label: [] for label, *_ in cases}
    try:
        for _ in range(args.repeat):
            for label, console, browser, clients in cases:
                port = free_port() if console else None
                config = work / "gate.yaml"
                config.write_text(f"cameras:\n  - name: cam\n    url: {rtsp.url('cam')}\n"
                                  + (f"http:\n  port: {port}\n" if console else ""))
                _, used, seen = measure(label, config, redis_server.url, port, args.warmup, args.seconds, env,
                                        browser, clients)
                runs[label].append((used, seen))
    finally:
        rtsp.stop()
        redis_server.stop()
    medians = {label: statistics.median(used for used, _ in values) for label, values in runs.items()}
    base = medians["console off"]
    print(f"window {args.seconds:.0f}s after {args.warmup:.0f}s warm-up, {args.repeat} interleaved rounds, one "
          f"1080p25 H.264 camera over RTSP/TCP; CPU of the gate process only (median, then every run)")
    for label, values in runs.items():
        seen = max(s for _, s in values)
        print(f"{label:38s} {medians[label]:6.1f} CPU s ({medians[label] / args.seconds:4.0%} of a core, "
              f"{medians[label] / base:.2f}× off)  runs: {', '.join(f'{u:.1f}' for u, _ in values)}"
              + (f"; up to {seen} face tiles / SSE messages seen" if seen else ""))
    print(f"ratio={medians[cases[2][0]] / base:.2f}")


if __name__ == "__main__":
    main()
