"""Waiting on a condition with a deadline (never a fixed sleep): one helper for every test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 45.0, what: str = "condition",
             process: subprocess.Popen | None = None, poll_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns something true and return that; fail on timeout, or when
    ``process`` ends first (with the end of its output)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"process ended (rc {process.returncode}) before {what}: {out[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)  # polling a condition with a deadline
