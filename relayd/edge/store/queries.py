"""Read queries: what the dispatcher sends next, and what status and tools show.

Plain functions on a read connection (WAL lets readers run beside the writer). Each one
walks an index from where it starts to as many rows as it returns: none counts or sorts
the table, so they take the same time on a million rows as on ten.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from relayd.edge.store.records import (
    PENDING,
    STATUSES,
    EndpointState,
    LastError,
    StoredWebhook,
    WebhookDetail,
    WebhookInfo,
)

__all__ = [
    "counts",
    "endpoint_states",
    "get",
    "list_webhooks",
    "next_pending",
    "pending_by_endpoint",
    "pending_outside",
    "webhook_detail",
    "webhook_info",
]

# The columns of a `WebhookInfo`. Rows from before schema 4 have no last_attempt_at: their
# last update was their last ack. length() of a blob does not read the blob.
INFO_COLUMNS = (
    "seq, id, endpoint_id, method, path, query, status, attempts, received_at, "
    "COALESCE(last_attempt_at, CASE WHEN attempts > 0 THEN updated_at END), "
    "next_attempt_at, last_status_code, last_error, length(body), replay_of"
)
# "before" when none is given: above every seq.
NO_BOUND = 2**63 - 1


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
    # kept by triggers (schema.COUNT_TRIGGERS): reading them costs the same at any table size
    for status, count in conn.execute(
            "SELECT status, SUM(n) FROM webhook_counts GROUP BY status"):
        result[status] = count
    (oldest,) = conn.execute(
        "SELECT MIN(received_at) FROM webhooks WHERE status = ?", (PENDING,)
    ).fetchone()
    result["oldest_pending_received_at"] = oldest
    return result


def list_webhooks(conn: sqlite3.Connection, *, status: str | None, endpoint_id: str | None,
                  before: int | None, limit: int) -> list[WebhookInfo]:
    """Up to ``limit`` webhooks with seq below ``before``, newest first, filtered.

    Each filter has its index (``status, seq``; ``endpoint_id, status, seq``); an endpoint
    without a status merges its four statuses, each read in seq order from that index, so
    a page costs ``limit`` index steps however many rows are skipped.
    """
    bound = NO_BOUND if before is None else before
    args: list[object]
    if endpoint_id is None and status is None:
        sql, args = f"SELECT {INFO_COLUMNS} FROM webhooks WHERE seq < ?", [bound]
    elif endpoint_id is None:
        sql, args = f"SELECT {INFO_COLUMNS} FROM webhooks WHERE status = ? AND seq < ?", \
            [status, bound]
    else:
        wanted = STATUSES if status is None else (status,)
        sql = " UNION ALL ".join(
            f"SELECT {INFO_COLUMNS} FROM webhooks WHERE endpoint_id = ? AND status = ? "
            "AND seq < ?" for _ in wanted)
        args = [arg for one in wanted for arg in (endpoint_id, one, bound)]
    rows = conn.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    return [WebhookInfo._make(row) for row in rows]


def webhook_info(conn: sqlite3.Connection, webhook_id: str) -> WebhookInfo | None:
    """One webhook as listed, or None."""
    row = conn.execute(f"SELECT {INFO_COLUMNS} FROM webhooks WHERE id = ?",
                       (webhook_id,)).fetchone()
    return None if row is None else WebhookInfo._make(row)


def webhook_detail(conn: sqlite3.Connection, webhook_id: str) -> WebhookDetail | None:
    """One webhook with its headers and body, or None."""
    row = conn.execute(
        f"SELECT {INFO_COLUMNS}, headers, body, remote_addr, delivered_at FROM webhooks "
        "WHERE id = ?", (webhook_id,)).fetchone()
    if row is None:
        return None
    *info, headers, body, remote_addr, delivered_at = row
    return WebhookDetail(WebhookInfo._make(info),
                         tuple((str(k), str(v)) for k, v in json.loads(headers)),
                         bytes(body), remote_addr, delivered_at)


def endpoint_states(conn: sqlite3.Connection, endpoint_ids: Sequence[str], now: float
                    ) -> dict[str, EndpointState]:
    """What the database says about each endpoint's queue (a few index lookups each)."""
    result = {}
    for endpoint_id in endpoint_ids:
        per_status = dict.fromkeys(STATUSES, 0)
        per_status.update(conn.execute(
            "SELECT status, n FROM webhook_counts WHERE endpoint_id = ?", (endpoint_id,)))
        head = conn.execute(
            "SELECT received_at FROM webhooks WHERE endpoint_id = ? AND status = ? "
            "ORDER BY seq LIMIT 1", (endpoint_id, PENDING)).fetchone()
        # "next_attempt_at > 0" as written in the partial index webhooks_backoff, so that
        # SQLite uses it
        (next_attempt,) = conn.execute(
            "SELECT MIN(next_attempt_at) FROM webhooks WHERE endpoint_id = ? AND status = ? "
            "AND next_attempt_at > 0 AND next_attempt_at > ?",
            (endpoint_id, PENDING, now)).fetchone()
        stats = conn.execute(
            "SELECT last_delivered_at, last_error_webhook_id, last_error_at, "
            "last_error_status_code, last_error_message FROM endpoint_stats "
            "WHERE endpoint_id = ?", (endpoint_id,)).fetchone()
        last_delivered, last_error = None, None
        if stats is not None:
            last_delivered = stats[0]
            if stats[1] is not None:
                last_error = LastError(stats[1], stats[2], stats[3], stats[4] or "")
        result[endpoint_id] = EndpointState(per_status, None if head is None else head[0],
                                            next_attempt, last_delivered, last_error)
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


def pending_by_endpoint(conn: sqlite3.Connection) -> dict[str, int]:
    """Pending webhooks per endpoint (read once, when the store opens)."""
    # webhook_counts: kept by triggers (schema.COUNT_TRIGGERS), a row per endpoint and status
    return dict(conn.execute(
        "SELECT endpoint_id, n FROM webhook_counts WHERE status = ? AND n > 0", (PENDING,)
    ).fetchall())
