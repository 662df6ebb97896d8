"""The admin listener's application: routes, and what every handler may reach.

Starlette (routing, requests, responses, static files) on the same hypercorn serving as
the ingress. Each concern adds its routes in its own module: `status` (``/api/status``),
`api` (the webhooks: list, show, retry, replay), `metrics` (``/metrics``), `health`
(``/healthz``, ``/readyz``), `dashboard` (the page at ``/``); the others follow the same
shape, ``routes(ctx) -> list[BaseRoute]``. Handlers reach the daemon only through
`AdminContext`. `security.AdminGuard` stands in front of them all.
"""

from __future__ import annotations

import logging
import sqlite3

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from relayd.edge.admin import api, dashboard, health, metrics, status
from relayd.edge.admin.context import AdminContext
from relayd.edge.admin.security import AdminGuard

__all__ = ["build_admin_app"]

log = logging.getLogger(__name__)

# Seconds a client is asked to wait after a 503 (the database refused: locked, I/O error).
RETRY_AFTER_SECONDS = 1


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "method not allowed"}, status_code=405)


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    # the database refused a read or a write (locked by another program past busy_timeout,
    # read-only, disk full): say so, as the ingress does, rather than a 500
    log.warning("admin %s %s: storage unavailable: %s: %s", request.method, request.url.path,
                type(exc).__name__, exc)
    return JSONResponse({"error": f"storage unavailable: {type(exc).__name__}: {exc}"},
                        status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def build_admin_app(ctx: AdminContext) -> Starlette:
    """The ASGI app served on ``[admin] listen``."""
    routes: list[BaseRoute] = [*status.routes(ctx), *api.routes(ctx), *metrics.routes(ctx),
                               *health.routes(ctx), *dashboard.routes(ctx)]
    return Starlette(routes=routes,
                     # Host, cross-site and token checks in front of every route
                     middleware=[Middleware(AdminGuard, admin=ctx.config.admin)],
                     exception_handlers={404: _not_found, 405: _method_not_allowed,
                                         sqlite3.Error: _storage_unavailable})
