"""`AdminGuard`: who may use the admin listener, and through what.

ASGI middleware in front of every admin route. In order:

1. **Host** (loopback listeners only): the ``Host`` header must name this machine
   (``127.0.0.1``, ``localhost``, ``[::1]`` or the configured host), else 421. Defeats DNS
   rebinding: a web page whose own name is re-pointed at 127.0.0.1 is same-origin in the
   browser's eyes, but its requests still carry its name in ``Host``. The port is not
   compared, so an SSH tunnel (``ssh -L 9000:127.0.0.1:8081``) and a reverse proxy that
   sends ``Host: 127.0.0.1`` (nginx's default) keep working.
2. **Cross-site** (every method but GET, HEAD, OPTIONS): a browser's request made by another
   site is refused with 403, so a page the operator visits cannot retry or replay through
   their browser. ``Sec-Fetch-Site`` decides when present (``same-origin`` and ``none``
   pass); without it (older browsers) an ``Origin`` must name the ``Host`` the request was
   sent to. Requests with neither header are not from a browser (relayctl, curl) and pass.
   This is the algorithm of Go's ``http.CrossOriginProtection``: the browser's own
   ``Sec-Fetch-Site`` is exact where comparing ``Origin`` with a ``Host`` rewritten by a
   proxy is not.
3. **Token** (when one is configured): ``Authorization: Bearer <token>``, compared in
   constant time, else 401 with ``WWW-Authenticate: Bearer``. GET and HEAD of
   `PUBLIC_PATHS` and `PUBLIC_PREFIXES` need none: probes, and the dashboard's page, which
   holds no data and asks for the token itself.

Every response also says it must not be framed (a page framing the dashboard could trick a
click on retry or replay, and requests from inside the frame are same-origin) and must not be
content-sniffed (the webhooks the API shows come from strangers).
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayd.edge.config import AdminConfig

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "AdminGuard"]

# Served without the token (GET and HEAD only). Probes cannot carry a token and answer only
# ready or not; the dashboard's page and its static files hold no data.
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
# Methods that change nothing (the admin routes that do change something are POST).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Fetch metadata values of a request the browser made for the page itself or for the user
# (typed URL, bookmark); `same-site` is refused too: another port or subdomain is another
# program.
ALLOWED_FETCH_SITES = frozenset({b"same-origin", b"none"})
# Names of this machine a browser may have used to reach a loopback listener.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
REALM = 'Bearer realm="relayd admin"'
# Added to every response (unless the route set the header): never framed, never sniffed.
NO_FRAMING = [(b"x-frame-options", b"DENY"),
              (b"content-security-policy", b"frame-ancestors 'none'"),
              (b"x-content-type-options", b"nosniff")]


class AdminGuard:
    """Host, cross-site and token checks before ``app``; see the module docstring."""

    def __init__(self, app: ASGIApp, admin: AdminConfig) -> None:
        self.app = app
        self.token = admin.token or None
        # Off the loopback a token is required (config), and the Host is whatever name the
        # operator's network gives the box.
        self.allowed_hosts = (LOOPBACK_NAMES | {admin.listen.host.lower()}
                              if admin.loopback else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No admin route speaks WebSocket; browsers send its handshake cross-site
            # without asking, so one added later needs these checks first.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _no_framing(send)
        headers = _headers(scope)
        refusal = (self._check_host(headers) or _check_cross_site(scope, headers)
                   or self._check_token(scope, headers))
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def _check_host(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        host = headers.get(b"host")
        if self.allowed_hosts is None or host is None:  # no Host: not a browser (HTTP/1.0)
            return None
        name = _host_name(host.decode("latin-1"))
        if name in self.allowed_hosts:
            return None
        return JSONResponse({"error": "misdirected request",
                             "reason": f"Host {name!r} does not name this loopback listener "
                                       "(use 127.0.0.1, localhost or [::1])"},
                            status_code=421)

    def _check_token(self, scope: Scope, headers: dict[bytes, bytes]) -> JSONResponse | None:
        if self.token is None or _is_public(scope):
            return None
        scheme, _, credentials = headers.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return JSONResponse({"error": "unauthorized", "reason": "token required"},
                                status_code=401, headers={"WWW-Authenticate": REALM})
        if hmac.compare_digest(credentials.strip(), self.token):
            return None
        return JSONResponse({"error": "unauthorized", "reason": "wrong token"},
                            status_code=401,
                            headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})


def _check_cross_site(scope: Scope, headers: dict[bytes, bytes]) -> JSONResponse | None:
    if scope["method"] in SAFE_METHODS:
        return None
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        if site.lower() in ALLOWED_FETCH_SITES:
            return None
        reason = f"cross-site request refused (Sec-Fetch-Site: {site.decode('latin-1')})"
    else:
        origin = headers.get(b"origin")
        host = headers.get(b"host", b"")
        if origin is None or _origin_netloc(origin) == host.lower():
            return None
        reason = (f"cross-origin request refused (Origin {origin.decode('latin-1')} "
                  f"is not this host)")
    return JSONResponse({"error": "forbidden", "reason": reason}, status_code=403)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers (names lowercase, as ASGI hands them); the first of repeats."""
    result: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        result.setdefault(name, value)
    return result


def _is_public(scope: Scope) -> bool:
    path: str = scope["path"]
    return scope["method"] in ("GET", "HEAD") and (
        path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: no port, no brackets, lowercase, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0].rstrip(".")


def _origin_netloc(origin: bytes) -> bytes:
    """``host[:port]`` of an ``Origin`` (``null`` and garbage give something no Host equals)."""
    _, sep, netloc = origin.strip().lower().partition(b"://")
    return netloc.rstrip(b"/") if sep else b"\x00"


def _no_framing(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend(h for h in NO_FRAMING if h[0] not in present)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers
