"""The gate against Redis configured as production would: an ACL user limited to the
facegate key prefix, and TLS with a CA and client certificates."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import redis

from gate.config import CameraConfig, RedisConfig
from gate.schema import Keys
from tests.support.gates import RunningGate, events_of, read_stream
from tests.support.servers import free_port, start_redis

KEYS = Keys()


def test_gate_works_as_an_acl_user_limited_to_its_prefix(rtsp_server, tmp_path):
    server = start_redis(tmp_path / "redis")
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "gate", "on", ">gate-Pw-1", "~facegate:*", "&*", "+@all",
                          "-@admin", "-@dangerous")
    url = f"redis://gate:gate-Pw-1@127.0.0.1:{server.port}/0"
    limited = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.set("someone-else:key", "x")
    gate = RunningGate(url, [CameraConfig(name="cam", url=rtsp_server.url("cam"))])
    try:
        events = events_of(read_stream(admin, KEYS.events, lambda e: len(e) >= 1))
    finally:
        gate.close()
        server.stop()
    assert events[0].camera == "cam"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
    pki = tmp_path / "pki"
    pki.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=facegate-test-ca", cwd=pki)
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "1", "-extfile", "san.ext", cwd=pki)
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--tls-cert-file", str(pki / "server.crt"),
         "--tls-key-file", str(pki / "server.key"), "--tls-ca-cert-file", str(pki / "ca.crt"),
         "--tls-auth-clients", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki / "ca.crt"),
                         ssl_certfile=str(pki / "client.crt"), ssl_keyfile=str(pki / "client.key"))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, ssl.SSLError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server with TLS did not start")
            time.sleep(0.05)  # polling a starting server
    yield port, pki, client
    process.terminate()
    process.wait(10)


def test_gate_works_over_tls_with_client_certificates(rtsp_server, tls_redis):
    port, pki, client = tls_redis
    url = f"rediss://127.0.0.1:{port}/0"
    plain = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki / "ca.crt"))
    with pytest.raises((redis.ConnectionError, ssl.SSLError)):
        plain.ping()  # no client certificate: refused
    tls = RedisConfig(ssl_ca_certs=str(pki / "ca.crt"), ssl_certfile=str(pki / "client.crt"),
                      ssl_keyfile=str(pki / "client.key"))
    gate = RunningGate(url, [CameraConfig(name="cam", url=rtsp_server.url("cam"))], redis_config=tls)
    try:
        events = events_of(read_stream(client, KEYS.events, lambda e: len(e) >= 1))
    finally:
        gate.close()
    assert events[0].camera == "cam" and events[0].face_jpeg[:2] == b"\xff\xd8"
