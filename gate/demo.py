"""``gate demo``: the whole pipeline on the sample videos, with an embedded Redis and the console.

Three cameras play the sample videos in real time; the gate detects, tracks, scores and
publishes; a consumer-group subscriber prints each event as it arrives and saves best
faces; the console (web page and API) is served while the demo runs, and with
``--serve`` after the videos end until Ctrl-C; at the end a summary per track.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from pydantic import ValidationError

from gate.config import CameraConfig, ConfigError, GateConfig, HttpConfig, SourceConfig


def _console_config(args: argparse.Namespace) -> HttpConfig | None:
    """The demo's console: the asked port, or a free one when it is busy (a demo should just start)."""
    if args.no_console:
        return None
    port = args.http_port
    if port:
        with socket.socket() as probe:
            try:
                probe.bind((args.http_host, port))
            except OSError:
                print(f"console: port {port} is busy, using a free one")
                port = 0
    try:
        return HttpConfig(host=args.http_host, port=port)
    except ValidationError as exc:
        raise ConfigError(f"console: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def run_demo(args: argparse.Namespace) -> int:
    from engines.paths import cache_root
    from engines.samples import gather_media
    from gate.client import EventSubscriber
    from gate.embedded import EmbeddedRedis
    from gate.runner import Gate

    http = _console_config(args)
    media = gather_media(cache_root() / "media", progress=False)
    embedded = None if args.redis else EmbeddedRedis()
    url = args.redis or embedded.url
    print(f"redis: {'embedded ' + url if embedded else 'given'}")
    config = GateConfig(
        cameras=[CameraConfig(name="studio", url=str(media["woman_pexels"])),
                 CameraConfig(name="door", url=str(media["door_man_single"])),
                 CameraConfig(name="car", url=str(media["carphone"]))],
        source=SourceConfig(loop_files=False, realtime_files=True),
        http=http or HttpConfig(),
    )
    config.redis.prefix = args.prefix
    config.quality.model = args.model
    gate = Gate(config, url)
    stop = threading.Event()
    runner = threading.Thread(target=gate.run, args=(stop,), name="gate", daemon=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tracks: dict[str, dict] = {}
    events = 0
    subscriber = EventSubscriber(url, group="demo", consumer="demo", prefix=args.prefix)

    def drain(block_ms: int) -> int:
        nonlocal events
        got = subscriber.read(count=50, block_ms=block_ms)
        for entry_id, event in got:
            events += 1
            key = f"{event.camera}/{event.track}"
            tracks[key] = {"event_id": event.event_id, "quality": event.quality, "type": event.type}
            path = args.out / f"{event.camera}_track{event.track}_{event.type}{event.seq}_q{event.quality:.0f}.jpg"
            path.write_bytes(event.face_jpeg)
            print(f"  {event.type:<6} camera={event.camera:<7} track={event.track:<3} quality={event.quality:5.1f} "
                  f"det={event.det_score:.2f} face={path.name}", flush=True)
            subscriber.ack(entry_id)
        return len(got)

    print(f"gate: quality {gate.model_tag} on {gate.scorer.backend_name}; cameras: "
          f"{', '.join(c.name for c in config.cameras)}")
    if gate.console is not None:
        print(f"console: {gate.console.url}  (open it in a browser"
              f"{'; it stays up after the videos until Ctrl-C' if args.serve else ''})", flush=True)
    runner.start()
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            drain(500)
            workers = list(gate.workers.values())
            if workers and len(workers) == len(config.cameras) and all(not w.alive for w in workers):
                break
        if args.serve and gate.console is not None:
            print(f"videos done; serving {gate.console.url} until Ctrl-C", flush=True)
            while True:
                drain(1000)
    except KeyboardInterrupt:
        print("interrupted")
    stop.set()
    runner.join(60)
    while drain(300):
        pass
    subscriber.close()
    if embedded:
        embedded.stop()
    print(f"\nsummary: {len(tracks)} tracks, {events} events; best faces in {args.out}/")
    for key, info in sorted(tracks.items()):
        print(f"  {key:<12} best quality {info['quality']:5.1f}  last event {info['type']:<6} "
              f"id {info['event_id'][:8]}")
    return 0 if tracks else 1
