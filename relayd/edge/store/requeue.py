"""An operator's retry and replay: a stored webhook sent again, as itself or as a copy.

Plain functions on the write connection, inside the caller's transaction.

- Retry makes a webhook pending again *as itself* (same id, same seq, so the same place in
  its endpoint's order): a final failure (``failed``, ``dead_letter``) becomes pending, a
  pending one loses its backoff. Its max-age clock restarts (``requeued_at``), else the
  next expiry sweep would dead-letter an old one again before it is sent. A delivered
  webhook is never retried: that is a replay.
- Replay copies any webhook as a new one (new id, arrival now, ``replay_of`` naming the
  original), queued at the end of its endpoint.
"""

from __future__ import annotations

import json
import sqlite3

from relayd.edge.store.records import PENDING, RETRYABLE, NewWebhook, Requeued

__all__ = ["RETRY_CHUNK", "replay_source", "retry_after", "retry_one"]

# Webhooks an endpoint-wide retry changes per transaction: the writer lock is released
# between chunks, so ingest and acks are not held up by a retry of many thousands.
RETRY_CHUNK = 1000

# Pending again, no backoff; rows from before schema 4 keep their last attempt time
# (SET expressions see the row as it was).
_REQUEUE = (
    "UPDATE webhooks SET status = ?, next_attempt_at = 0, requeued_at = ?, updated_at = ?, "
    "last_attempt_at = COALESCE(last_attempt_at, CASE WHEN attempts > 0 THEN updated_at END) "
    "WHERE seq = ?"
)


def retry_one(conn: sqlite3.Connection, webhook_id: str, now: float) -> Requeued | None:
    """Retry ``webhook_id``; None if there is no such webhook or it is not retryable."""
    row = conn.execute("SELECT seq, endpoint_id, status FROM webhooks WHERE id = ?",
                       (webhook_id,)).fetchone()
    if row is None or row[2] not in RETRYABLE:
        return None
    seq, endpoint_id, status = row
    conn.execute(_REQUEUE, (PENDING, now, now, seq))
    return Requeued(webhook_id, endpoint_id, seq, status)


def retry_after(conn: sqlite3.Connection, endpoint_id: str, status: str, after_seq: int,
                now: float, limit: int = RETRY_CHUNK) -> list[Requeued]:
    """Retry the next ``limit`` webhooks of ``endpoint_id`` in ``status`` after ``after_seq``.

    ``pending`` takes only those waiting out a backoff.
    """
    if status == PENDING:
        # "next_attempt_at > 0" as in the partial index webhooks_backoff (few rows)
        rows = conn.execute(
            "SELECT seq, id FROM webhooks WHERE endpoint_id = ? AND status = ? "
            "AND next_attempt_at > 0 AND next_attempt_at > ? AND seq > ? ORDER BY seq LIMIT ?",
            (endpoint_id, status, now, after_seq, limit)).fetchall()
    else:
        rows = conn.execute(
            "SELECT seq, id FROM webhooks WHERE endpoint_id = ? AND status = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (endpoint_id, status, after_seq, limit)).fetchall()
    conn.executemany(_REQUEUE, [(PENDING, now, now, seq) for seq, _ in rows])
    return [Requeued(webhook_id, endpoint_id, seq, status) for seq, webhook_id in rows]


def replay_source(conn: sqlite3.Connection, webhook_id: str, new_id: str, now: float
                  ) -> NewWebhook | None:
    """The copy a replay of ``webhook_id`` stores (as ``new_id``); None if there is none."""
    row = conn.execute(
        "SELECT endpoint_id, method, headers, body, path, query, remote_addr FROM webhooks "
        "WHERE id = ?", (webhook_id,)).fetchone()
    if row is None:
        return None
    endpoint_id, method, headers, body, path, query, remote_addr = row
    return NewWebhook(new_id, endpoint_id, method,
                      [(str(k), str(v)) for k, v in json.loads(headers)], bytes(body), now,
                      path=path, query=query, remote_addr=remote_addr, replay_of=webhook_id)
