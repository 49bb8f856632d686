"""The console's FastAPI application: routers, the static page, error bodies free of secrets, the token guard."""

from __future__ import annotations

import logging
from pathlib import Path

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from gate.console import cameras, events, media, service, stream
from gate.console.auth import TokenGuard
from gate.console.context import Console

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).with_name("static")


def create_app(console: Console) -> FastAPI:
    # The OpenAPI description is served; the interactive docs are not (they load scripts from a CDN,
    # which the page's content policy forbids and offline sites cannot reach).
    app = FastAPI(title="facegate console", summary="cameras, best-frame events and live updates of a gate",
                  openapi_url="/api/openapi.json", docs_url=None, redoc_url=None)
    app.state.console = console
    app.include_router(stream.router)  # before /api/events/{entry_id}, which would take "stream" as an id
    for module in (events, media, cameras, service):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes the offending input by default; an attach body holds a camera password.
        detail = [{"loc": list(e.get("loc", ())), "msg": console.redactor.text(e.get("msg", "")), "type": e.get("type")}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        reason = console.redactor.text(exc)
        log.warning("console: redis error: %s", reason)
        return JSONResponse({"detail": f"redis unavailable: {reason}"}, 503)

    app.add_middleware(TokenGuard, token=console.token)
    return app
