"""Wall time, CPU time and peak memory of each stage of a long job (``trainer rebuild``).

Peak memory is the process's peak resident set (``VmHWM``), reset at the start of each
stage through ``/proc/self/clear_refs`` (Linux), so each stage reports its own peak,
memory-mapped pages it touched included. Child processes (DataLoader or embedding
workers) are reported separately: the kernel keeps only their largest peak so far, so
that figure is the highest of any child up to the end of the stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Make ``VmHWM`` start again from the current resident set; False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class StageRecord:
    """One stage: how long it took, how much CPU and memory it used, whether it was reused."""

    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float | None = None
    peak_rss_is_lifetime: bool = False  # True where the peak could not be reset (not Linux)
    children_peak_rss_mib: float | None = None
    reused: bool = False
    details: dict = field(default_factory=dict)


class StageLog:
    """Stages in the order they ran; ``with log.stage("fit") as record:`` measures one."""

    def __init__(self) -> None:
        self.records: list[StageRecord] = []
        self._started: dict[int, tuple[float, os.times_result]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = self.begin(name)
        try:
            yield record
        finally:
            self.end(record)

    def begin(self, name: str) -> StageRecord:
        """Start measuring a stage (``end`` closes it; ``stage`` does both around a block)."""
        record = StageRecord(name)
        record.peak_rss_is_lifetime = not _reset_peak()
        self._started[id(record)] = (time.perf_counter(), os.times())
        return record

    def end(self, record: StageRecord) -> StageRecord:
        started, cpu = self._started.pop(id(record))
        ended = os.times()
        record.seconds = round(time.perf_counter() - started, 2)
        record.cpu_seconds = round(sum(ended[:4]) - sum(cpu[:4]), 2)
        peak = _status_kib("VmHWM")
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            record.peak_rss_is_lifetime = True
        record.peak_rss_mib = round(peak / 1024, 1)
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        record.children_peak_rss_mib = round(children / 1024, 1) if children else None
        self.records.append(record)
        return record

    def as_json(self) -> list[dict]:
        return [asdict(r) for r in self.records]

    def table(self) -> str:
        """The stages as a text table (what ``trainer rebuild`` prints at the end)."""
        lines = [f"{'stage':<28} {'wall s':>9} {'cpu s':>9} {'peak MiB':>9} {'children MiB':>13}"]
        for r in self.records:
            name = r.name + (" (reused)" if r.reused else "")
            peak = f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib is not None else "-"
            children = f"{r.children_peak_rss_mib:.0f}" if r.children_peak_rss_mib else "-"
            lines.append(f"{name:<28} {r.seconds:>9.1f} {r.cpu_seconds:>9.1f} {peak:>9} {children:>13}")
        total = sum(r.seconds for r in self.records)
        lines.append(f"{'total':<28} {total:>9.1f}")
        return "\n".join(lines)
