"""Read queries: what the dispatcher sends next, and what status and tools show.

Plain functions on a read connection (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from relayd.edge.store.records import PENDING, STATUSES, StoredWebhook

__all__ = ["counts", "get", "next_pending", "pending_outside"]


def next_pending(conn: sqlite3.Connection, wanted: Sequence[tuple[str, int, int]]
                 ) -> dict[str, list[StoredWebhook]]:
    """For each ``(endpoint_id, after_seq, limit)``, the next pending rows in order."""
    result: dict[str, list[StoredWebhook]] = {}
    for endpoint_id, after_seq, limit in wanted:
        rows = conn.execute(
            "SELECT seq, id, endpoint_id, method, headers, body, received_at, attempts, "
            "next_attempt_at, envelope_head, path, query, remote_addr FROM webhooks "
            "WHERE endpoint_id = ? AND status = ? AND seq > ? ORDER BY seq LIMIT ?",
            (endpoint_id, PENDING, after_seq, limit),
        ).fetchall()
        result[endpoint_id] = [StoredWebhook._make(row) for row in rows]
    return result


def counts(conn: sqlite3.Connection) -> dict[str, object]:
    """Counts per status, and ``oldest_pending_received_at`` (None when nothing is pending)."""
    result: dict[str, object] = dict.fromkeys(STATUSES, 0)
    # kept by triggers (schema.py): reading them costs the same at any table size
    for status, count in conn.execute("SELECT status, n FROM webhook_counts"):
        result[status] = count
    (oldest,) = conn.execute(
        "SELECT MIN(received_at) FROM webhooks WHERE status = ?", (PENDING,)
    ).fetchone()
    result["oldest_pending_received_at"] = oldest
    return result


def get(conn: sqlite3.Connection, webhook_id: str) -> dict[str, object] | None:
    """One webhook's row as a dict, or None."""
    cursor = conn.execute("SELECT * FROM webhooks WHERE id = ?", (webhook_id,))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def pending_outside(conn: sqlite3.Connection, endpoint_ids: Sequence[str]) -> dict[str, int]:
    """Pending counts for endpoints that are not in ``endpoint_ids`` (orphans)."""
    marks = ",".join("?" * len(endpoint_ids))
    return dict(
        conn.execute(
            "SELECT endpoint_id, COUNT(*) FROM webhooks WHERE status = ? "
            f"AND endpoint_id NOT IN ({marks}) GROUP BY endpoint_id",
            (PENDING, *endpoint_ids),
        ).fetchall()
    )
