"""A real gate in a thread of the test process, built from a whole config."""

from __future__ import annotations

import threading

from gate.config import GateConfig, SourceConfig

# Short timeouts and backoff, so camera faults show within a test's patience.
TEST_SOURCE = SourceConfig(open_timeout_s=3, read_timeout_s=3, backoff_initial_s=0.5, backoff_max_s=2)


class GateThread:
    """``Gate.run`` on a thread; ``close`` stops it (tracks ended, buffers flushed) and checks it stopped."""

    def __init__(self, config: GateConfig, redis_url: str) -> None:
        from gate.runner import Gate

        self.gate = Gate(config, redis_url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gate.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def __enter__(self) -> GateThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
