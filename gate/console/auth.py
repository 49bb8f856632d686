"""The console's token guard, as ASGI middleware in front of everything (API, page, metrics).

- With a token, every request needs it. Scripts send ``Authorization: Bearer <token>``.
  A browser opens ``/?token=<token>`` once: the answer is a redirect to the page that
  drops the token from the address bar and sets an HttpOnly, SameSite=Strict cookie
  holding a value derived from the token (an HMAC), never the token itself. Anything
  else gets 401.
- Without a token (allowed on loopback only, see :class:`gate.config.HttpConfig`), a
  request must name a loopback host, so a web page elsewhere cannot reach the console
  by rebinding its own domain name to 127.0.0.1.

Every response also carries headers that keep the page to its own origin (CSP, no
framing, no referrer).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gate.config import is_loopback

COOKIE_NAME = "facegate_session"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LOGIN_HINT = ("<!doctype html><title>facegate console</title><p>This console needs its token. Open it once as "
              "<code>…/?token=YOUR_TOKEN</code> (the token is then kept in a cookie and dropped from the address)."
              "</p>")


def session_value(token: str) -> str:
    """What the browser's cookie holds: derived from the token, useless as a bearer token."""
    return hmac.new(token.encode(), b"facegate console session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class TokenGuard:
    """ASGI middleware: the token (or, without one, a loopback Host) before anything else runs."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self._refusal(Request(scope))
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        """The response that stops this request, or None to let it through."""
        if self.token is None:
            if is_loopback(_host_name(request.headers.get("host", ""))):
                return None
            return JSONResponse({"detail": "this console has no token and answers loopback host names only"}, 403)
        path = request.url.path
        if path == "/" and "token" in request.query_params:
            if not _same(request.query_params["token"], self.token):
                return HTMLResponse(LOGIN_HINT, 401)
            response = RedirectResponse("./", 303)
            response.set_cookie(COOKIE_NAME, self.session or "", httponly=True, samesite="strict", path="/",
                                secure=request.url.scheme == "https")
            return response
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
            return None
        if _same(request.cookies.get(COOKIE_NAME, ""), self.session or ""):
            return None
        if path == "/" or path.startswith("/static/"):
            return HTMLResponse(LOGIN_HINT, 401)
        return JSONResponse({"detail": "missing or wrong token (Authorization: Bearer …)"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})
