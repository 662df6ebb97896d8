"""``GET /healthz`` and ``GET /readyz``: probes for load balancers and container runtimes.

``/healthz`` answers ``200 {"status": "ok"}`` whenever the event loop does: the process is
up (a liveness probe; systemd's watchdog covers a wedged loop the same way).

``/readyz`` answers ``200 {"status": "ready"}`` only when every listener is bound, no
stop has begun, and the store takes a write lock now (``BEGIN IMMEDIATE; ROLLBACK``,
bounded by `STORE_CHECK_SECONDS`); otherwise ``503 {"status": "unavailable", "reason":
...}``. A relayd whose database is locked by another program or unwritable answers 503
to webhooks too, so traffic is better sent elsewhere.
"""

from __future__ import annotations

import sqlite3

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relayd.edge.admin.context import AdminContext
from relayd.edge.store import Store

__all__ = ["HEALTH_PATH", "READY_PATH", "STORE_CHECK_SECONDS", "routes", "store_problem"]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# The store check waits this long for the writer's turn (a commit in progress), then as
# long again for the database's write lock: within a probe's usual 1 s timeout.
STORE_CHECK_SECONDS = 0.25


async def store_problem(store: Store, seconds: float = STORE_CHECK_SECONDS) -> str | None:
    """Why the store cannot take a write now, or None when it can."""
    with trio.move_on_after(seconds):
        try:
            await store.check_writable(lock_timeout=seconds)
        except sqlite3.Error as exc:
            return f"store not writable: {type(exc).__name__}: {exc}"
        return None
    return f"store busy: no turn to write within {seconds:g}s"


def routes(ctx: AdminContext) -> list[BaseRoute]:
    async def get_health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def get_ready(request: Request) -> Response:
        reason = ctx.not_ready() or await store_problem(ctx.store)
        if reason is not None:
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    return [Route(HEALTH_PATH, get_health, methods=["GET"]),
            Route(READY_PATH, get_ready, methods=["GET"])]
