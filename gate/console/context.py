"""What the console's routers share: its own Redis client, the registry, bands, the feed, the gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import redis
from fastapi import Depends, Request

from engines.thresholds import BandLookup, Bands
from gate.console.feed import EventFeed
from gate.console.views import Redactor
from gate.registry import CameraRegistry
from gate.schema import Keys

if TYPE_CHECKING:
    from gate.runner import Gate


def sibling_client(client: redis.Redis) -> redis.Redis:
    """A client to the same Redis with the same options (TLS, password) and a pool of its own.

    The console's reads (event pages, SSE) then never wait behind the gate's event writer.
    """
    pool = client.connection_pool
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                            **pool.connection_kwargs))


@dataclass
class Console:
    """State of one console server."""

    gate: Gate
    client: redis.Redis
    keys: Keys
    registry: CameraRegistry
    bands: BandLookup
    redactor: Redactor
    feed: EventFeed
    token: str | None

    @classmethod
    def for_gate(cls, gate: Gate, token: str | None) -> Console:
        client = sibling_client(gate.client)
        keys = gate.keys
        # A quality model's manifest may hold a threshold table; the embedding norm's is SFace's (none).
        known = (gate.scorer.manifest,) if gate.scorer.method == "model" else ()
        bands = BandLookup(gate.config.quality.bands_recognizer, known=known)
        password = client.connection_pool.connection_kwargs.get("password")
        redactor = Redactor(token, password)
        for camera in gate.config.cameras:
            redactor.learn_url(camera.url)
        feed = EventFeed(client, keys, bands, redactor)
        return cls(gate, client, keys, CameraRegistry(client, keys), bands, redactor, feed, token)

    @property
    def model_bands(self) -> Bands | None:
        """Bands of the model this gate scores with."""
        return self.bands.for_model(self.gate.model_tag)

    def close(self) -> None:
        self.feed.stop()
        self.client.close()


def console_of(request: Request) -> Console:
    """FastAPI dependency: the console serving this request."""
    return request.app.state.console


ConsoleDep = Annotated[Console, Depends(console_of)]
