"""``GET /api/status``: the relay at a glance.

The JSON document is what `relayctl status` prints and a dashboard polls:
``connected``, ``hub_id``, ``peer``, ``connected_since``, ``last_seen_at`` (ISO 8601 UTC);
``queue`` with ``pending`` (waiting to be sent), ``in_flight`` (sent, not yet acked),
``delivered``, ``failed``, ``dead_letter`` and ``oldest_pending_age_seconds``; and
``endpoints``, one entry per configured endpoint, in configuration order, with what tells
why its queue does not move: the same counts, the age of its first pending webhook, its
last delivery, its last error and when its next retry is due.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relayd.edge.admin.context import AdminContext
from relayd.edge.admin.documents import iso
from relayd.edge.store import DEAD_LETTER, DELIVERED, FAILED, PENDING, EndpointState

__all__ = ["routes", "status_document"]

STATUS_PATH = "/api/status"


def _age(now: float, ts: float | None) -> float | None:
    return None if ts is None else round(max(now - ts, 0.0), 3)


async def status_document(ctx: AdminContext) -> dict[str, Any]:
    """The status snapshot served at ``/api/status``."""
    counts = await ctx.store.counts()
    now = ctx.clock()
    endpoints = ctx.live_config().endpoints
    endpoint_ids = [ep.id for ep in endpoints]
    states = await ctx.store.endpoint_states(endpoint_ids, now)
    stats = ctx.manager.statistics()
    in_flight = ctx.dispatch.in_flight()
    conn = ctx.manager.current
    oldest = counts["oldest_pending_received_at"]
    return {
        "connected": stats.connected,
        "hub_id": stats.hub_id,
        "peer": stats.peer,
        "connected_since": iso(stats.connected_since),
        "last_seen_at": iso(stats.last_seen),
        "queue": {
            "pending": max(int(counts["pending"]) - stats.in_flight, 0),  # type: ignore[call-overload]
            "in_flight": stats.in_flight,
            "delivered": counts["delivered"],
            "failed": counts["failed"],
            "dead_letter": counts["dead_letter"],
            "oldest_pending_age_seconds": _age(now, oldest),  # type: ignore[arg-type]
        },
        "endpoints": [
            _endpoint(ep.id, ep.destination_url, states[ep.id], len(in_flight.get(ep.id, ())),
                      conn is not None and conn.serves(ep.id), now)
            for ep in endpoints
        ],
    }


def _endpoint(endpoint_id: str, destination_url: str, state: EndpointState, in_flight: int,
              hub_serves: bool, now: float) -> dict[str, Any]:
    error = state.last_error
    return {
        "id": endpoint_id,
        "destination_url": destination_url,
        # whether the connected hub takes this endpoint (its endpoint_ids); false with none
        "hub_serves": hub_serves,
        "pending": max(state.counts[PENDING] - in_flight, 0),
        "in_flight": in_flight,
        "delivered": state.counts[DELIVERED],
        "failed": state.counts[FAILED],
        "dead_letter": state.counts[DEAD_LETTER],
        # the first pending webhook in the endpoint's order: the one the rest wait behind
        "oldest_pending_age_seconds": _age(now, state.head_received_at),
        "last_delivered_at": iso(state.last_delivered_at),
        "last_error": None if error is None else {
            "webhook_id": error.webhook_id,
            "at": iso(error.at),
            "status_code": error.status_code or None,  # null: no HTTP answer
            "message": error.message,
        },
        "next_attempt_at": iso(state.next_attempt_at),
    }


def routes(ctx: AdminContext) -> list[BaseRoute]:
    async def get_status(request: Request) -> Response:
        return JSONResponse(await status_document(ctx))

    return [Route(STATUS_PATH, get_status, methods=["GET"])]
