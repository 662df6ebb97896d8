"""The admin listener: ``GET /api/status`` (loopback by default).

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

from relayd.edge.http import Receive, Scope, Send, handle_lifespan, send_json
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import Store

__all__ = ["AdminApp", "status_document"]

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


class AdminApp:
    """ASGI app for the admin/status listener."""

    def __init__(self, store: Store, manager: ConnectionManager) -> None:
        self._store = store
        self._manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != STATUS_PATH:
            await send_json(send, 404, {"error": "not found"})
        elif scope["method"] not in ("GET", "HEAD"):
            await send_json(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET")])
        else:
            await send_json(send, 200, await status_document(self._store, self._manager))
