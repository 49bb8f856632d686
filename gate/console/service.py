"""The gate itself: ``/api/gate`` (model, bands, min_quality), and ``/metrics``, ``/healthz``, ``/livez``.

With the console on, Prometheus metrics and the health check live here, on the console's
port (and behind its token); ``metrics_port`` is for gates without a console (the config
refuses both at once).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gate.console.context import ConsoleDep
from gate.console.models import BandView, GateView
from gate.metrics import health, liveness, render_metrics

router = APIRouter(tags=["gate"])


@router.get("/api/gate", response_model=GateView, summary="this gate: model, quality bands, min_quality")
def gate_info(console: ConsoleDep) -> GateView:
    gate = console.gate
    bands = console.model_bands
    return GateView(worker=gate.worker_id, model=gate.model_tag, method=gate.scorer.method,
                    backend=gate.scorer.backend_name,
                    min_quality=gate.config.bestshot.min_quality, recognizer=bands.recognizer if bands else None,
                    fmr=bands.fmr if bands else None,
                    bands=[BandView(name=b.name, min_quality=b.min_quality, fnmr=b.fnmr, discarded=b.discarded)
                           for b in (bands.bands if bands else ())])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(console: ConsoleDep) -> Response:
    return Response(render_metrics(console.gate), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="503 when no camera produced a frame lately or Redis is unreachable")
def healthz(console: ConsoleDep) -> JSONResponse:
    ok, info = health(console.gate)
    return JSONResponse(info, status_code=200 if ok else 503)


@router.get("/livez", summary="503 only when the process itself is broken (a pipeline thread stopped, the "
            "supervisor stuck): for a liveness probe; a broken camera does not count")
def livez(console: ConsoleDep) -> JSONResponse:
    ok, info = liveness(console.gate)
    return JSONResponse(info, status_code=200 if ok else 503)
