"""Per-endpoint facts the rows do not keep: when it last delivered, and its last error.

Written in the transaction that applies the acks (`acks`), one row per endpoint, so that
`/api/status` can say "last error 503 ... 12 s ago" without searching the table. Read by
`queries.endpoint_states`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

__all__ = ["record_delivered", "record_error"]


def record_delivered(conn: sqlite3.Connection, endpoint_ids: Iterable[str], now: float) -> None:
    """Webhooks of ``endpoint_ids`` were delivered at ``now``."""
    conn.executemany(
        "INSERT INTO endpoint_stats (endpoint_id, last_delivered_at) VALUES (?, ?) "
        "ON CONFLICT (endpoint_id) DO UPDATE SET last_delivered_at = excluded.last_delivered_at",
        [(endpoint_id, now) for endpoint_id in set(endpoint_ids)])


def record_error(conn: sqlite3.Connection, endpoint_id: str, webhook_id: str, now: float,
                 status_code: int | None, message: str) -> None:
    """An attempt of ``webhook_id`` failed at ``now`` (or it expired undelivered)."""
    conn.execute(
        "INSERT INTO endpoint_stats (endpoint_id, last_error_webhook_id, last_error_at, "
        "last_error_status_code, last_error_message) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (endpoint_id) DO UPDATE SET "
        "last_error_webhook_id = excluded.last_error_webhook_id, "
        "last_error_at = excluded.last_error_at, "
        "last_error_status_code = excluded.last_error_status_code, "
        "last_error_message = excluded.last_error_message",
        (endpoint_id, webhook_id, now, status_code, message))
