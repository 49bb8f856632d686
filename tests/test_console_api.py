"""The console's HTTP API against a real gate, a real Redis (with a password) and a real RTSP camera.

Token on every route, 422 with reasons on bad attaches, no secret in anything that leaves
the process, event pages and images, and server-sent events within a second of XADD.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time

import cv2
import httpx
import numpy as np
import pytest

from gate.config import ConfigError, HttpConfig, load_config
from gate.console.auth import COOKIE_NAME, TokenGuard
from gate.schema import Event, Keys
from tests.support.console import RTSP_PASSWORD, SECRETS, TOKEN, ConsoleSetup

KEYS = Keys()


@pytest.fixture(scope="module")
def console(tmp_path_factory, looped_video):
    setup = ConsoleSetup(tmp_path_factory.mktemp("console"), looped_video)
    yield setup
    setup.close()


def jpeg(value: int, size=(112, 112)) -> bytes:
    return cv2.imencode(".jpg", np.full((*size, 3), value, np.uint8))[1].tobytes()


def synthetic_event(camera: str, quality: float, model: str, track: int = 1, frame: bytes = b"") -> Event:
    now = time.time()
    return Event("new", f"{camera}-{track}", camera, track, 1, now, now - 1, None, [10.0, 20.0, 60.0, 90.0],
                 [[20.0, 40.0]] * 5, 0.93, quality, model, 640, 360, jpeg(int(quality)), frame)


ROUTES = [("GET", "/"), ("GET", "/static/app.js"), ("GET", "/api/gate"), ("GET", "/api/cameras"),
          ("POST", "/api/cameras"), ("DELETE", "/api/cameras/cam"), ("GET", "/api/events"),
          ("GET", "/api/events/1-0"), ("GET", "/api/events/1-0/face.jpg"), ("GET", "/api/events/1-0/frame.jpg"),
          ("GET", "/api/events/stream"), ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/livez"),
          ("GET", "/api/openapi.json")]


def test_every_route_needs_the_token(console):
    documented = set(console.api.get("/api/openapi.json").json()["paths"])
    tested = {re.sub(r"^/api/cameras/cam$", "/api/cameras/{name}", path.replace("1-0", "{entry_id}"))
              for _, path in ROUTES}
    assert documented <= tested, documented - tested  # a new route is added to this test
    for method, path in ROUTES:
        assert console.anonymous.request(method, path).status_code == 401, path
        wrong = console.anonymous.request(method, path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert wrong.status_code == 401, path
    assert console.anonymous.get("/api/cameras").headers["www-authenticate"] == "Bearer"
    assert console.api.get("/api/gate").status_code == 200
    assert console.anonymous.get("/api/gate", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_the_page_takes_the_token_once_and_keeps_a_derived_cookie(console):
    assert console.anonymous.get("/", params={"token": "not-the-token"}).status_code == 401
    login = console.anonymous.get("/", params={"token": TOKEN})
    assert login.status_code == 303 and login.headers["location"] == "./"
    cookie = login.cookies[COOKIE_NAME]
    assert cookie and TOKEN not in cookie and TOKEN not in str(login.headers)
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    with httpx.Client(base_url=console.url, cookies={COOKIE_NAME: cookie}) as browser:
        page = browser.get("/")
        assert page.status_code == 200 and "facegate" in page.text and TOKEN not in page.text
        assert browser.get("/api/cameras").status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
    with httpx.Client(base_url=console.url, cookies={COOKIE_NAME: TOKEN}) as raw:
        assert raw.get("/api/cameras").status_code == 401  # the token itself is not a session


def test_without_a_token_only_loopback_host_names_are_answered():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = TokenGuard(Starlette(routes=[Route("/", lambda _: PlainTextResponse("ok"))]), token=None)

    async def status(host: str) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=f"http://{host}") as client:
            return (await client.get("/")).status_code

    for host, expected in (("127.0.0.1:8080", 200), ("localhost:8080", 200), ("[::1]:8080", 200),
                           ("evil.example:8080", 403), ("10.0.0.5", 403)):
        assert asyncio.run(status(host)) == expected, host


def test_a_token_is_required_beyond_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGATE_HTTP_TOKEN", raising=False)
    path = tmp_path / "gate.yaml"
    path.write_text("http:\n  port: 8080\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError, match=r"line 3: http\.host: .*needs a token"):
        load_config(path)
    path.write_text("metrics_port: 9108\nhttp:\n  port: 8080\n")
    with pytest.raises(ConfigError, match="served there: remove metrics_port"):
        load_config(path)
    path.write_text("http:\n  token: short\n")
    with pytest.raises(ConfigError, match=r"line 2: http\.token"):
        load_config(path)
    monkeypatch.setenv("FACEGATE_HTTP_TOKEN", TOKEN)
    path.write_text("http:\n  port: 8080\n  host: 0.0.0.0\n")
    assert load_config(path).http.resolved_token() == TOKEN
    monkeypatch.setenv("FACEGATE_HTTP_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        HttpConfig().resolved_token()


@pytest.mark.parametrize(("body", "reason"), [
    ({"name": "bad name!", "url": "rtsp://h/x"}, "camera names use letters"),
    ({"name": "ok", "url": "/etc/passwd"}, "network cameras only"),
    ({"name": "ok", "url": f"ftp://u:{RTSP_PASSWORD}@h/x"}, "network cameras only"),
    ({"name": "ok", "url": "rtsp://"}, "network cameras only"),
    ({"name": "ok", "url": "rtsp://h/" + "x" * 2100}, "longer than 2048"),
    ({"name": "ok", "url": "rtsp://h/x", "transport": "smtp"}, "transport"),
    ({"name": "ok"}, "url"),
    ({"name": "ok", "url": "rtsp://h/x", "colour": "red"}, "colour"),
    ([f"rtsp://u:{RTSP_PASSWORD}@h/x"], "body"),
])
def test_a_bad_attach_gets_422_with_the_reason_and_changes_nothing(console, body, reason):
    before = console.client.hgetall(KEYS.cameras)
    response = console.api.post("/api/cameras", json=body)
    assert response.status_code == 422
    assert reason in response.text and RTSP_PASSWORD not in response.text
    assert console.client.hgetall(KEYS.cameras) == before


def test_attach_and_detach_write_the_registry_as_the_cli_does(console):
    url = console.camera_url("cam2")
    created = console.api.post("/api/cameras", json={"name": "api-cam", "url": url, "transport": "tcp"})
    assert created.status_code == 201
    assert created.json() == {"name": "api-cam", "url": url.replace(f"camadmin:{RTSP_PASSWORD}@", "***@"),
                              "transport": "tcp"}
    assert json.loads(console.client.hget(KEYS.cameras, "api-cam")) == {"url": url, "transport": "tcp"}
    listed = console.wait_for(lambda: console.camera("api-cam"), "api-cam listed")
    assert listed["source"] == "registry" and RTSP_PASSWORD not in json.dumps(listed)
    assert console.api.delete("/api/cameras/api-cam").status_code == 204
    assert console.client.hget(KEYS.cameras, "api-cam") is None
    console.wait_for(lambda: console.camera("api-cam") is None, "api-cam gone from the list")
    assert console.api.delete("/api/cameras/api-cam").status_code == 404
    from_config = console.api.delete("/api/cameras/cam")
    assert from_config.status_code == 404 and "config file" in from_config.json()["detail"]
    assert console.api.delete("/api/cameras/bad%20name").status_code == 422


def test_events_pages_images_and_bands(console):
    model = console.api.get("/api/gate").json()["model"]
    ids = [console.client.xadd(KEYS.events, synthetic_event(cam, q, model, track, jpeg(7, (90, 160))).to_fields())
           .decode() for cam, q, track in (("synthA", 45.0, 1), ("synthB", 5.0, 1), ("synthA", 25.0, 2),
                                           ("synthA", 30.0, 3))]
    newest = console.api.get("/api/events", params={"camera": "synthA", "limit": 2}).json()
    assert [e["entry_id"] for e in newest["events"]] == [ids[2], ids[3]]  # the latest two, oldest first
    after = console.api.get("/api/events", params={"camera": "synthA", "after": ids[0]}).json()["events"]
    assert [e["entry_id"] for e in after] == [ids[2], ids[3]]
    before = console.api.get("/api/events", params={"camera": "synthA", "before": ids[2]}).json()["events"]
    assert before[-1]["entry_id"] == ids[0] and all(e["camera"] == "synthA" for e in before)
    one = console.api.get(f"/api/events/{ids[0]}").json()
    # The sample table's sface bands: good from 40, usable from 20 (tests/test_thresholds.py).
    assert (one["quality"], one["band"], one["camera"], one["bbox"]) == (45.0, "good", "synthA", [10, 20, 60, 90])
    assert [console.api.get(f"/api/events/{i}").json()["band"] for i in ids[1:3]] == ["poor", "usable"]
    assert "face_jpeg" not in one and one["face_url"] == f"/api/events/{ids[0]}/face.jpg"
    face = console.api.get(one["face_url"])
    assert face.headers["content-type"] == "image/jpeg" and face.content == jpeg(45)
    frame = cv2.imdecode(np.frombuffer(console.api.get(one["frame_url"]).content, np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape == (90, 160, 3)
    assert console.api.get("/api/events/1-0").status_code == 404
    assert console.api.get("/api/events/1-0/face.jpg").status_code == 404
    assert console.api.get("/api/events/not-an-id").status_code == 422
    assert console.api.get("/api/events", params={"limit": 0}).status_code == 422


def _sse_messages(response, count: int, arrived: list, stop_on=None) -> None:
    message: dict = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in message:
                arrived.append((time.monotonic(), message))
                if len(arrived) >= count or (stop_on and stop_on(message)):
                    return
            message = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            message[key] = value


def test_server_sent_events_arrive_within_a_second_of_xadd(console):
    model = console.api.get("/api/gate").json()["model"]
    with console.api.stream("GET", "/api/events/stream", params={"camera": "sse"}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        arrived: list = []
        reader = threading.Thread(target=_sse_messages, args=(response, 3, arrived,
                                                              lambda m: m.get("event") == "event"), daemon=True)
        reader.start()
        sent_at = time.monotonic()
        entry_id = console.client.xadd(KEYS.events, synthetic_event("sse", 50.0, model).to_fields()).decode()
        reader.join(10)
    events = [(at, m) for at, m in arrived if m.get("event") == "event"]
    assert events, arrived
    at, message = events[0]
    assert message["id"] == entry_id and json.loads(message["data"])["camera"] == "sse"
    assert at - sent_at < 1.0, f"delivered {at - sent_at:.3f} s after XADD"
    # A reconnecting client (Last-Event-ID) first gets what it missed, then live ones.
    missed = console.client.xadd(KEYS.events, synthetic_event("sse", 60.0, model, track=2).to_fields()).decode()
    with console.api.stream("GET", "/api/events/stream", params={"camera": "sse"},
                            headers={"Last-Event-ID": entry_id}, timeout=30) as response:
        replay: list = []
        _sse_messages(response, 1, replay)
    assert replay[0][1]["id"] == missed


def test_no_secret_leaves_the_process(console):
    # A camera that fails on its credentials and one with a Redis-looking URL give errors to report.
    console.api.post("/api/cameras", json={"name": "wrongpw", "url": console.camera_url("cam", "wrong-pass-77"),
                                           "transport": "tcp"})
    failing = console.wait_for(lambda: (c := console.camera("wrongpw")) and c["last_error"] and c,
                               "wrongpw to report its error")
    console.wait_for(lambda: (c := console.camera("cam")) and c["state"] == "online", "cam online")
    console.wait_for(lambda: console.api.get("/api/events", params={"camera": "cam"}).json()["events"],
                     "an event of cam")
    bodies = [failing]
    for path in ("/", "/static/app.js", "/static/style.css", "/api/gate", "/api/cameras", "/api/events",
                 "/api/openapi.json", "/metrics", "/healthz", "/api/events/1-0", "/api/cameras/nothing",
                 "/?token=wrong"):
        response = console.api.get(path)
        bodies.append(response.text + str(response.headers))
    events = console.api.get("/api/events", params={"limit": 200}).json()["events"]
    for event in events:
        bodies.append(console.api.get(f"/api/events/{event['entry_id']}").text)
    bodies.append(console.api.post("/api/cameras", json={"name": "x y", "url": console.camera_url("cam")}).text)
    with console.api.stream("GET", "/api/events/stream", params={"after": "0-0"}, timeout=30) as response:
        replay: list = []
        _sse_messages(response, len(events), replay)  # the replay of every event in the stream
    bodies += [json.dumps(m) for _, m in replay]
    console.api.delete("/api/cameras/wrongpw")
    everything = "\n".join(str(b) for b in bodies) + "\n".join(console.logs.lines)
    for secret in (*SECRETS, "wrong-pass-77"):
        assert secret not in everything, secret
    assert '"url":"rtsp://***@127.0.0.1' in console.api.get("/api/cameras").text


def test_metrics_and_health_are_served_by_the_console(console):
    console.wait_for(lambda: (c := console.camera("cam")) and c["state"] == "online", "cam online")
    text = console.api.get("/metrics").text
    assert 'facegate_frames_decoded_total{camera="cam"}' in text
    assert "facegate_tracks_below_min_quality_total" in text
    health = console.api.get("/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True
    live = console.api.get("/livez")
    assert live.status_code == 200 and live.json()["ok"] is True


def test_gate_events_names_bands_from_a_models_table(console, tmp_path):
    model = console.api.get("/api/gate").json()["model"]
    for quality, below in ((45.0, False), (5.0, True)):
        event = synthetic_event("bands", quality, model)
        event.type, event.below_min_quality = ("end", True) if below else ("new", False)
        console.client.xadd(KEYS.events, event.to_fields())
    everything = str(console.client.xlen(KEYS.events))  # the subscriber reads the whole stream, then stops
    result = subprocess.run([sys.executable, "-m", "gate.cli", "events", "--redis", console.redis_url, "--count",
                             everything, "--timeout", "60", "--model", str(console.model)], capture_output=True,
                            text=True)
    lines = [line for line in result.stdout.splitlines() if "bands/" in line]
    assert result.returncode == 0 and len(lines) == 2, result.stdout + result.stderr
    assert "q= 45.0 good id=" in lines[0] and "q=  5.0 poor below-min-quality" in lines[1]
    assert not any(s in result.stdout + result.stderr for s in SECRETS)


def test_redis_loss_is_a_clear_503_and_stopping_ends_open_streams(tmp_path):
    from gate.config import GateConfig
    from tests.support.console import REDIS_PASSWORD
    from tests.support.gates import TEST_SOURCE, GateThread
    from tests.support.servers import start_redis

    server = start_redis(tmp_path / "redis", extra=("--requirepass", REDIS_PASSWORD))
    gate = GateThread(GateConfig(source=TEST_SOURCE, http=HttpConfig(port=0)),
                      f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0")
    url = gate.gate.console.url
    ended = threading.Event()

    def hold_stream() -> None:
        with httpx.stream("GET", url + "api/events/stream", timeout=60) as response:
            for _ in response.iter_lines():
                pass
        ended.set()

    try:
        assert httpx.get(url + "api/cameras", timeout=10).json() == []
        reader = threading.Thread(target=hold_stream, daemon=True)
        reader.start()
        server.stop()
        down = httpx.get(url + "api/cameras", timeout=30)
        assert down.status_code == 503 and "redis unavailable" in down.json()["detail"]
        assert REDIS_PASSWORD not in down.text
    finally:
        started = time.monotonic()
        gate.close()  # ends the open event stream instead of waiting for it
        server.stop()
    assert ended.wait(10) and time.monotonic() - started < 30


def test_the_redactor_removes_known_secrets_wherever_they_appear():
    from gate.console.views import Redactor

    redactor = Redactor(TOKEN, None)
    assert redactor.url(f"rtsp://camadmin:{RTSP_PASSWORD}@10.0.0.5/s1") == "rtsp://***@10.0.0.5/s1"
    text = redactor.text(f"401 for {RTSP_PASSWORD}; token {TOKEN}; rtsp://other:pw99@h/x; user camadmin")
    assert RTSP_PASSWORD not in text and TOKEN not in text and "pw99" not in text
    assert "camadmin" in text  # user names are not secrets: ordinary words stay readable
