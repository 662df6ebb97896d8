"""The admin listener's application: routes, and what every handler may reach.

Starlette (routing, requests, responses, static files) on the same hypercorn serving as
the ingress. Each concern adds its routes in its own module: `status` (``/api/status``),
`metrics` (``/metrics``), `health` (``/healthz``, ``/readyz``), `dashboard` (the page at
``/``); the others follow the same shape, ``routes(ctx) -> list[BaseRoute]``. Handlers
reach the daemon only through `AdminContext`. `security.AdminGuard` stands in front of
them all.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from relayd.edge.admin import dashboard, health, metrics, status
from relayd.edge.admin.context import AdminContext
from relayd.edge.admin.security import AdminGuard

__all__ = ["build_admin_app"]


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "method not allowed"}, status_code=405)


def build_admin_app(ctx: AdminContext) -> Starlette:
    """The ASGI app served on ``[admin] listen``."""
    routes: list[BaseRoute] = [*status.routes(ctx), *metrics.routes(ctx),
                               *health.routes(ctx), *dashboard.routes(ctx)]
    return Starlette(routes=routes,
                     # Host, cross-site and token checks in front of every route
                     middleware=[Middleware(AdminGuard, admin=ctx.config.admin)],
                     exception_handlers={404: _not_found, 405: _method_not_allowed})
