"""``gate``: run the streaming gate, manage cameras at runtime, read events, or run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import redis

from engines.errors import FacegateError
from gate.config import REDIS_URL_ENV, ConfigError, load_config
from gate.redact import redact_text, redact_url
from gate.schema import DEFAULT_PREFIX, Keys


def _redis_url(args: argparse.Namespace, config=None) -> str:
    import os

    url = args.redis or os.environ.get(REDIS_URL_ENV) or (config.redis.url if config else None)
    if not url:
        raise ConfigError(f"no Redis: pass --redis URL or set {REDIS_URL_ENV}")
    return url


def _client(args: argparse.Namespace):
    from gate.bus import connect

    return connect(_redis_url(args))


def cmd_run(args: argparse.Namespace) -> int:
    from gate.runner import Gate

    config = load_config(args.config)
    gate = Gate(config, _redis_url(args, config))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"gate {gate.worker_id}: quality {gate.model_tag} on {gate.scorer.backend_name}; "
          f"redis {redact_url(_redis_url(args, config))}, prefix {config.redis.prefix!r}", flush=True)
    if gate.console is not None:
        print(f"console: {gate.console.url}", flush=True)
    return gate.run(stop)  # 1 when a pipeline thread died: a supervisor restarts the gate


def cmd_attach(args: argparse.Namespace) -> int:
    from gate.registry import CameraRegistry, RegistryError

    registry = CameraRegistry(_client(args), Keys(args.prefix))
    try:
        camera = registry.attach(args.name, args.url, args.transport)
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    print(f"attached {camera.name}: {redact_url(camera.url)}")
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    from gate.registry import CameraRegistry

    removed = CameraRegistry(_client(args), Keys(args.prefix)).detach(args.name)
    print(f"detached {args.name}" if removed else f"{args.name} was not registered")
    return 0 if removed else 1


def cmd_cameras(args: argparse.Namespace) -> int:
    from gate.registry import CameraRegistry

    client = _client(args)
    keys = Keys(args.prefix)
    cameras = CameraRegistry(client, keys).cameras()
    states = {k.decode(): json.loads(v) for k, v in client.hgetall(keys.camera_state).items()}
    seconds, micros = client.time()  # states are stamped with Redis's clock too (hosts' clocks may differ)
    now = seconds + micros / 1e6
    rows = []
    for name in sorted(set(cameras) | set(states)):
        state = states.get(name, {})
        stale = state and now - state.get("ts", 0) > 10
        rows.append({"name": name, "url": redact_url(cameras[name].url) if name in cameras else "(config)",
                     "state": ("stale: " if stale else "") + state.get("state", "not running"),
                     "fps": state.get("fps", 0.0), "decoder": state.get("decoder", ""),
                     "last_error": redact_text(state.get("last_error", ""))})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'camera':<16} {'state':<14} {'fps':>5}  {'decoder':<16} {'url':<40} last error")
    for row in rows:
        print(f"{row['name']:<16} {row['state']:<14} {row['fps']:>5.1f}  {row['decoder'] or '-':<16} "
              f"{row['url']:<40} {row['last_error']}")
    return 0


def _band_lookup(args: argparse.Namespace):
    """Quality bands for event output: from --model's threshold table, else each event's shipped model."""
    from engines.manifest import read_manifest
    from engines.modelfiles import model_dir
    from engines.thresholds import BandLookup

    known = (read_manifest(model_dir(args.model)),) if args.model else ()
    return BandLookup(args.recognizer, known=known)


def cmd_events(args: argparse.Namespace) -> int:
    from gate.client import EventSubscriber

    bands = _band_lookup(args)
    out = Path(args.save) if args.save else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    with EventSubscriber(_redis_url(args), args.group, args.consumer, args.prefix) as sub:
        while (args.count is None or seen < args.count) and (deadline is None or time.monotonic() < deadline):
            batch = sub.claim_stale(args.claim_idle_ms) + sub.read(count=10, block_ms=1000)
            for entry_id, event in batch:
                band = bands.name(event.model, event.quality)
                marks = (f" {band}" if band else "") + (" below-min-quality" if event.below_min_quality else "")
                print(f"{event.type:<6} {event.camera}/{event.track} q={event.quality:5.1f}{marks} "
                      f"id={event.event_id[:8]} seq={event.seq} bbox={[round(v) for v in event.bbox]}", flush=True)
                if out and event.face_jpeg:
                    (out / f"{event.camera}_{event.event_id[:8]}_{event.seq}_{event.type}.jpg").write_bytes(
                        event.face_jpeg)
                sub.ack(entry_id)
                seen += 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gate.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gate", description="facegate streaming gate: cameras → faces → tracks → best frame per track → "
        f"Redis Streams. Redis comes from --redis URL or ${REDIS_URL_ENV}.")
    parser.add_argument("-v", "--verbose", action="store_true")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", default=None, help=f"redis:// or rediss:// URL (default ${REDIS_URL_ENV})")
    common.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the gate (cameras from config and registry)")
    run.add_argument("--config", type=Path, default=None, help="YAML config (see configs/gate.yaml)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", parents=[common], help="the whole pipeline on the sample videos")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for best faces")
    demo.add_argument("--timeout", type=float, default=120.0, help="stop after this many seconds (with --serve: "
                      "the console stays up)")
    demo.add_argument("--model", default=None, help="quality model folder or name (default: current)")
    demo.add_argument("--http-port", type=int, default=8080, help="console port (0: any free one; a busy 8080 "
                      "falls back to a free one)")
    demo.add_argument("--http-host", default="127.0.0.1", help="console address (beyond loopback: set "
                      "$FACEGATE_HTTP_TOKEN)")
    demo.add_argument("--no-console", action="store_true", help="no web console")
    demo.add_argument("--serve", action="store_true", help="keep the console up after the videos end (Ctrl-C "
                      "stops)")
    demo.set_defaults(func=cmd_demo)

    attach = sub.add_parser("attach", parents=[common], help="register a camera; running gates start it")
    attach.add_argument("name")
    attach.add_argument("url")
    attach.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    attach.set_defaults(func=cmd_attach)

    detach = sub.add_parser("detach", parents=[common], help="unregister a camera; running gates stop it")
    detach.add_argument("name")
    detach.set_defaults(func=cmd_detach)

    cameras = sub.add_parser("cameras", parents=[common], help="registered cameras, state, fps, decoder, last error")
    cameras.add_argument("--json", action="store_true")
    cameras.set_defaults(func=cmd_cameras)

    events = sub.add_parser("events", parents=[common], help="print events with a consumer group")
    events.add_argument("--group", default="gate-events")
    events.add_argument("--consumer", default="cli")
    events.add_argument("--save", default=None, help="save face JPEGs into this folder")
    events.add_argument("--count", type=int, default=None, help="stop after this many events")
    events.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    events.add_argument("--claim-idle-ms", type=int, default=30_000, help="take over entries idle this long")
    events.add_argument("--model", default=None, help="quality model folder or name whose threshold table names "
                        "the bands shown (default: each event's model, when shipped)")
    events.add_argument("--recognizer", default=None, help="recogniser whose thresholds name the bands (default: "
                        "the table's first)")
    events.set_defaults(func=cmd_events)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FacegateError, ConfigError) as exc:
        print(f"gate {args.command}: error: {redact_text(exc)}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"gate {args.command}: Redis error: {redact_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
