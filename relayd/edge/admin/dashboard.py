"""The dashboard: one page at ``/`` and its script and style under ``/static/``.

The files (``static/``, shipped in the package) hold no data: the page asks the JSON API
from the browser every few seconds and asks the operator for the admin token when the API
wants one, so `security.AdminGuard` serves them without a token. They are read once, when
the app is built, and only these three are served (no directory listing, no path to
resolve). ``Cache-Control: no-cache`` with an ETag: the browser revalidates, so a new
relayd's page is used at once, and an unchanged one costs a 304.

The page's Content-Security-Policy lets it run only its own script, load only its own
style and talk only to its own origin: the webhooks it shows are written by strangers, and
even if some text reached the page as markup it could not run or send anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from relayd.edge.admin.context import AdminContext

__all__ = ["ASSETS", "PAGE_POLICY", "routes"]

# URL path -> (file in static/, media type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# `frame-ancestors` repeats the guard's: a route's own policy replaces the guard's header.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               "img-src 'self' data:; form-action 'none'; base-uri 'none'; "
               "frame-ancestors 'none'")


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> _Asset:
    body = (files("relayd.edge.admin") / "static" / name).read_bytes()
    return _Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def routes(ctx: AdminContext) -> list[BaseRoute]:
    def serve(asset: _Asset) -> Callable[[Request], Awaitable[Response]]:
        async def get_asset(request: Request) -> Response:
            headers = {"ETag": asset.etag, "Cache-Control": "no-cache",
                       "Content-Security-Policy": PAGE_POLICY}
            if asset.etag in request.headers.get("if-none-match", ""):
                return Response(status_code=304, headers=headers)
            return Response(asset.body, media_type=asset.media_type, headers=headers)

        return get_asset

    return [Route(path, serve(_load(name, media_type)), methods=["GET"])
            for path, (name, media_type) in ASSETS.items()]
