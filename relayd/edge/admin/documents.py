"""The JSON shapes of the admin API: a webhook as listed, in full, and timestamps.

Times are ISO 8601 in UTC with milliseconds (``2026-11-28T09:15:02.513+00:00``) or null.
A webhook's ``status`` is the database's, except ``in_flight`` for a pending one the hub
has and has not acked yet. ``last_status_code`` is null when no HTTP answer came
(connection refused, timeout): ``last_error`` says what happened instead. ``path`` and
``query`` (and header names and values) are the received bytes as latin-1 text, still
percent-encoded.
"""

from __future__ import annotations

import base64
from collections.abc import Container
from datetime import UTC, datetime
from typing import Any

from relayd.edge.store import PENDING, WebhookDetail, WebhookInfo

__all__ = ["IN_FLIGHT", "iso", "webhook_detail", "webhook_item"]

# The status shown for a pending webhook the hub has (not a database state).
IN_FLIGHT = "in_flight"


def iso(ts: float | None) -> str | None:
    """``ts`` (Unix seconds) as ISO 8601 UTC with milliseconds; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def webhook_item(info: WebhookInfo, in_flight: Container[str] = ()) -> dict[str, Any]:
    """``info`` as ``GET /api/webhooks`` lists it (``in_flight``: ids the hub has)."""
    pending = info.status == PENDING
    return {
        "id": info.id,
        "endpoint_id": info.endpoint_id,
        "method": info.method,
        "path": info.path,
        "query": info.query,
        "status": IN_FLIGHT if pending and info.id in in_flight else info.status,
        "attempts": info.attempts,
        "received_at": iso(info.received_at),
        "last_attempt_at": iso(info.last_attempt_at),
        "next_attempt_at": iso(info.next_attempt_at) if pending and info.next_attempt_at
        else None,
        "last_status_code": info.last_status_code or None,
        "last_error": info.last_error,
        "size": info.size,
        "replay_of": info.replay_of,
    }


def webhook_detail(detail: WebhookDetail, in_flight: Container[str] = ()) -> dict[str, Any]:
    """``GET /api/webhooks/{id}``: the item, where it came from, its headers and body."""
    try:
        text: str | None = detail.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        **webhook_item(detail.info, in_flight),
        "remote_addr": detail.remote_addr,
        "delivered_at": iso(detail.delivered_at),
        "headers": [list(pair) for pair in detail.headers],
        "body_base64": base64.b64encode(detail.body).decode("ascii"),
        "body_text": text,
    }
