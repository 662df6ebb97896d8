"""``GET /api/status``: the relay at a glance.

The JSON document is what `relayctl status` prints and a dashboard polls:
``connected``, ``hub_id``, ``peer``, ``connected_since``, ``last_seen_at`` (ISO 8601 UTC)
and ``queue`` with ``pending`` (waiting to be sent), ``in_flight`` (sent, not yet acked),
``delivered``, ``failed``, ``dead_letter`` and ``oldest_pending_age_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relayd.edge.admin.context import AdminContext
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import Store

__all__ = ["routes", "status_document"]

STATUS_PATH = "/api/status"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


async def status_document(store: Store, manager: ConnectionManager,
                          clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The status snapshot served at ``/api/status``."""
    counts = await store.counts()
    stats = manager.statistics()
    oldest = counts["oldest_pending_received_at"]
    now = clock()
    return {
        "connected": stats.connected,
        "hub_id": stats.hub_id,
        "peer": stats.peer,
        "connected_since": _iso(stats.connected_since),
        "last_seen_at": _iso(stats.last_seen),
        "queue": {
            "pending": max(int(counts["pending"]) - stats.in_flight, 0),  # type: ignore[call-overload]
            "in_flight": stats.in_flight,
            "delivered": counts["delivered"],
            "failed": counts["failed"],
            "dead_letter": counts["dead_letter"],
            "oldest_pending_age_seconds":
                None if oldest is None else round(max(now - float(oldest), 0.0), 3),  # type: ignore[arg-type]
        },
    }


def routes(ctx: AdminContext) -> list[BaseRoute]:
    async def get_status(request: Request) -> Response:
        return JSONResponse(await status_document(ctx.store, ctx.manager, ctx.clock))

    return [Route(STATUS_PATH, get_status, methods=["GET"])]
