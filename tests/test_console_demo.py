"""``gate demo`` serves the console while it runs and, with ``--serve``, after its videos until Ctrl-C."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _wait_line(lines: queue.Queue, pattern: str, seen: list[str], timeout_s: float) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def test_gate_demo_prints_the_console_address_and_serves_it_until_interrupted(tmp_path):
    demo = subprocess.Popen([sys.executable, "-m", "gate.cli", "demo", "--out", str(tmp_path / "faces"),
                             "--http-port", "0", "--serve", "--timeout", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(demo.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        url = _wait_line(lines, r"console: (http://127\.0\.0\.1:\d+/)", seen, 180).group(1)
        with httpx.Client(base_url=url, timeout=15) as client:
            assert {c["name"] for c in client.get("api/cameras").json()} == {"studio", "door", "car"}
            _wait_line(lines, r"videos done; serving", seen, 60)
            assert client.get("").status_code == 200  # still serving after the demo's run
            deadline = time.monotonic() + 90
            while not client.get("api/events").json()["events"]:
                assert time.monotonic() < deadline, "no event in the demo"
                time.sleep(0.5)  # polling the API for the first event
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
        _wait_line(lines, r"summary: \d+ tracks", seen, 10)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
