"""The console's HTTP server: uvicorn with its own event loop on a thread of the gate process.

The socket is bound before the thread starts, so a busy port or a wrong address is a
clear error at gate start. Access logs are off (a browser's first request carries the
token in its query). Stopping ends every live stream first, so shutdown never waits on
an open page.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from engines.errors import FacegateError
from gate.config import HttpConfig
from gate.console.app import create_app
from gate.console.context import Console

if TYPE_CHECKING:
    from gate.runner import Gate

log = logging.getLogger(__name__)


class ConsoleError(FacegateError):
    """The console cannot start (address in use, not an address of this machine)."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConsoleError(f"the console cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class ConsoleServer:
    """The API and page of one gate; ``start`` returns once it accepts connections."""

    def __init__(self, gate: Gate, config: HttpConfig) -> None:
        self.console = Console.for_gate(gate, config.resolved_token())
        self.host = config.host
        self._socket = _bind(config.host, config.port or 0)
        self.port: int = self._socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.console), lifespan="off", log_config=None, log_level="warning", access_log=False,
            server_header=False, timeout_graceful_shutdown=3))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name="console", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout_s: float = 15.0) -> ConsoleServer:
        self.console.feed.start()
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConsoleError(f"the console did not start on {self.host}:{self.port}")
            time.sleep(0.02)  # uvicorn sets `started` from its own loop; nothing to wait on
        log.info("console on %s", self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.console.close()  # ends the live streams, so the server is not kept waiting
        self._thread.join(10)
        self._socket.close()


def start_console(gate: Gate, config: HttpConfig) -> ConsoleServer:
    return ConsoleServer(gate, config).start()
