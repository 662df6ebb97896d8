"""The ack state machine: what an ack (or old age) does to a webhook row.

Plain functions on a write connection, called inside the caller's transaction. A webhook
is ``pending`` until an ack makes it ``delivered`` (success), ``failed`` (permanent
failure) or, past the maximum age, ``dead_letter``; a transient failure keeps it
``pending`` with the next attempt pushed back by the retry policy. A skip (see
`AckRecord.is_skip`) is not an attempt. Acks for unknown or already final webhooks are
reported as ``ignored`` and change nothing.

The maximum age counts from arrival, or from an operator's retry (``requeued_at``) when
there was one. Each outcome also updates the endpoint's last delivery or last error
(`stats`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from relayd.edge.store.records import (
    DEAD_LETTER,
    DELIVERED,
    FAILED,
    PENDING,
    AckOutcome,
    AckRecord,
    RetryPolicy,
)
from relayd.edge.store.stats import record_delivered, record_error

__all__ = ["apply_acks", "expire_pending"]

# Longest error text kept per webhook.
MAX_ERROR_CHARS = 500
# The error of a webhook that reached the maximum age while pending.
EXPIRED_ERROR = "expired undelivered"


def apply_acks(conn: sqlite3.Connection, acks: Sequence[AckRecord], now: float,
               retry: RetryPolicy) -> list[AckOutcome]:
    """Apply ``acks`` in order; return what each one did."""
    outcomes: list[AckOutcome] = []
    # Each run of successes (the bulk) is one statement per status code instead of a
    # query and an update per ack.
    start = 0
    while start < len(acks):
        end = start
        while end < len(acks) and acks[end].success:
            end += 1
        if end > start:
            outcomes += _apply_successes(conn, acks[start:end], now, retry)
            start = end
        else:
            outcomes.append(_apply_one(conn, acks[start], now, retry))
            start += 1
    return outcomes


def expire_pending(conn: sqlite3.Connection, now: float, max_age: float,
                   exclude: set[str]) -> list[tuple[str, str]]:
    """Turn pending webhooks older than ``max_age`` into dead letters; return their
    ``(id, endpoint_id)``."""
    cutoff = now - max_age
    expired = [
        (webhook_id, endpoint_id)
        for webhook_id, endpoint_id in conn.execute(
            "SELECT id, endpoint_id FROM webhooks WHERE status = ? AND received_at <= ? "
            "AND (requeued_at IS NULL OR requeued_at <= ?)",
            (PENDING, cutoff, cutoff),
        )
        if webhook_id not in exclude
    ]
    conn.executemany(
        "UPDATE webhooks SET status = ?, last_error = ?, updated_at = ? "
        "WHERE id = ? AND status = ?",
        [(DEAD_LETTER, EXPIRED_ERROR, now, webhook_id, PENDING) for webhook_id, _ in expired],
    )
    last_per_endpoint = {endpoint_id: webhook_id for webhook_id, endpoint_id in expired}
    for endpoint_id, webhook_id in last_per_endpoint.items():
        record_error(conn, endpoint_id, webhook_id, now, None, EXPIRED_ERROR)
    return expired


def _apply_successes(conn: sqlite3.Connection, acks: Sequence[AckRecord], now: float,
                     retry: RetryPolicy) -> list[AckOutcome]:
    by_code: dict[int, list[str]] = {}
    for ack in acks:
        by_code.setdefault(ack.status_code, []).append(ack.webhook_id)
    delivered: dict[str, tuple[str, float]] = {}
    for code, ids in by_code.items():
        # "+status": not the status index, which SQLite otherwise picks and then walks
        # every pending row per statement (measured: 0.4-0.8 s per 512 acks with 1M
        # pending, against 10 ms through the id index).
        for webhook_id, endpoint_id, received_at in conn.execute(
            "UPDATE webhooks SET status = ?, delivered_at = ?, last_status_code = ?, "
            "attempts = attempts + 1, last_attempt_at = ?, updated_at = ? WHERE +status = ? "
            "AND id IN (SELECT value FROM json_each(?)) RETURNING id, endpoint_id, received_at",
            (DELIVERED, now, code, now, now, PENDING, json.dumps(ids)),
        ):
            delivered[webhook_id] = (endpoint_id, received_at)
    record_delivered(conn, [endpoint_id for endpoint_id, _ in delivered.values()], now)
    outcomes = []
    for ack in acks:
        row = delivered.pop(ack.webhook_id, None)
        if row is not None:
            outcomes.append(AckOutcome(ack.webhook_id, row[0], "delivered", received_at=row[1]))
        else:  # unknown, already final, or a second ack in this batch: say which
            outcomes.append(_apply_one(conn, ack, now, retry))
    return outcomes


def _apply_one(conn: sqlite3.Connection, ack: AckRecord, now: float,
               retry: RetryPolicy) -> AckOutcome:
    row = conn.execute(
        "SELECT endpoint_id, status, attempts, received_at, "
        "MAX(received_at, COALESCE(requeued_at, 0)) FROM webhooks WHERE id = ?",
        (ack.webhook_id,),
    ).fetchone()
    if row is None:
        return AckOutcome(ack.webhook_id, None, "ignored", "unknown webhook id")
    endpoint_id, status, attempts, received_at, age_basis = row
    if status != PENDING:
        return AckOutcome(ack.webhook_id, endpoint_id, "ignored", f"already {status}",
                          received_at=received_at)
    if ack.is_skip():
        return AckOutcome(ack.webhook_id, endpoint_id, "skipped", received_at=received_at)
    error = ack.error_message[:MAX_ERROR_CHARS]
    if ack.success:
        conn.execute(
            "UPDATE webhooks SET status = ?, delivered_at = ?, last_status_code = ?, "
            "attempts = attempts + 1, last_attempt_at = ?, updated_at = ? WHERE id = ?",
            (DELIVERED, now, ack.status_code, now, now, ack.webhook_id),
        )
        record_delivered(conn, [endpoint_id], now)
        return AckOutcome(ack.webhook_id, endpoint_id, "delivered", received_at=received_at)
    record_error(conn, endpoint_id, ack.webhook_id, now, ack.status_code, error)
    if ack.permanent_failure:
        conn.execute(
            "UPDATE webhooks SET status = ?, last_error = ?, last_status_code = ?, "
            "attempts = attempts + 1, last_attempt_at = ?, updated_at = ? WHERE id = ?",
            (FAILED, error, ack.status_code, now, now, ack.webhook_id),
        )
        return AckOutcome(ack.webhook_id, endpoint_id, "failed", error, received_at=received_at)
    failures = attempts + 1
    if now - age_basis >= retry.max_age:
        conn.execute(
            "UPDATE webhooks SET status = ?, last_error = ?, last_status_code = ?, "
            "attempts = ?, last_attempt_at = ?, updated_at = ? WHERE id = ?",
            (DEAD_LETTER, error, ack.status_code, failures, now, now, ack.webhook_id),
        )
        return AckOutcome(ack.webhook_id, endpoint_id, "dead_letter", error,
                          received_at=received_at)
    next_at = now + retry.delay(failures)
    conn.execute(
        "UPDATE webhooks SET attempts = ?, next_attempt_at = ?, last_error = ?, "
        "last_status_code = ?, last_attempt_at = ?, updated_at = ? WHERE id = ?",
        (failures, next_at, error, ack.status_code, now, now, ack.webhook_id),
    )
    return AckOutcome(ack.webhook_id, endpoint_id, "retry", error, next_at, received_at)
