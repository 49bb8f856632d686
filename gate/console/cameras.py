"""``/api/cameras``: the camera list (registry + config + live state) and runtime attach/detach.

Attach and detach are the registry writes ``gate attach``/``gate detach`` make; a running
gate applies them within a second. Over HTTP only network cameras can be attached (a
file path would let a remote caller make the gate open local files).
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from gate.config import CAMERA_NAME
from gate.console.context import Console, ConsoleDep
from gate.console.models import AttachRequest, AttachResult, CameraView
from gate.console.views import STALE_AFTER_S, attach_result, camera_view
from gate.registry import RegistryError

router = APIRouter(prefix="/api/cameras", tags=["cameras"])
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")


def _list(console: Console) -> list[CameraView]:
    registered = console.registry.cameras()
    configured = {camera.name: camera for camera in console.gate.config.cameras}
    states = {}
    for raw_name, raw in console.client.hgetall(console.keys.camera_state).items():
        try:
            states[raw_name.decode(errors="replace")] = json.loads(raw)
        except ValueError:
            continue
    now = time.time()
    # Other workers' cameras appear while their state is fresh; a detached camera leaves the registry
    # and the state hash, so it is gone at once.
    elsewhere = {name for name, state in states.items() if now - float(state.get("ts", 0)) <= STALE_AFTER_S}
    return [camera_view(name, console.redactor, registered.get(name), configured.get(name), states.get(name),
                        console.feed.last_event_ts.get(name), now)
            for name in sorted(set(registered) | set(configured) | elsewhere)]


@router.get("", response_model=list[CameraView], summary="cameras: state, fps, decoder, last error, last event")
def list_cameras(console: ConsoleDep) -> list[CameraView]:
    return _list(console)


def _check_network_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise HTTPException(422, "url: not a valid URL") from None
    if parts.scheme.lower() not in NETWORK_SCHEMES or not host:
        raise HTTPException(422, "url: the API attaches network cameras only (rtsp://, rtsps://, http://, https:// "
                                 "with a host); use `gate attach` on the gate's machine for files")


@router.post("", response_model=AttachResult, status_code=201, summary="attach a camera (as `gate attach`)",
             responses={422: {"description": "bad name or URL; the reason, without credentials"}})
async def attach(body: AttachRequest, console: ConsoleDep) -> AttachResult:
    _check_network_url(body.url)
    try:
        camera = await run_in_threadpool(console.registry.attach, body.name, body.url, body.transport)
    except RegistryError as exc:
        raise HTTPException(422, console.redactor.text(exc)) from None
    return attach_result(camera, console.redactor)


@router.delete("/{name}", status_code=204, summary="detach a camera (as `gate detach`)",
               responses={404: {"description": "not in the registry"}, 422: {"description": "not a camera name"}})
async def detach(name: str, console: ConsoleDep) -> None:
    if not CAMERA_NAME.match(name):
        raise HTTPException(422, "camera names use letters, digits, '_', '-', '.' (at most 64)")
    if not await run_in_threadpool(console.registry.detach, name):
        where = " (it comes from the config file: edit that)" if any(
            c.name == name for c in console.gate.config.cameras) else ""
        raise HTTPException(404, f"camera {name} is not registered{where}")
