"""Status counts kept by the database, and acks that cost the same however much is pending.

Costs are counted in SQLite VM instructions (a progress handler called for each one): the
figure that grows with the table when a statement walks it, and does not vary with the
machine's load.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from relayd.edge.store import AckRecord, NewWebhook, Store, queries, schema
from relayd.edge.store import acks as ack_sql
from relayd.edge.store.records import RetryPolicy
from tests.db import open_db, write_v3_database

POLICY = RetryPolicy(initial=1, maximum=60, max_age=3600)


def webhooks(n: int, prefix: str = "w", received_at: float | None = None) -> list[NewWebhook]:
    at = time.time() if received_at is None else received_at
    return [NewWebhook(f"{prefix}{i}", f"ep{i % 3}", "POST", [], b"x", at) for i in range(n)]


def counted_by_scan(path: Path) -> dict[str, int]:
    with open_db(path) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM webhooks GROUP BY status"))


def vm_steps(conn: sqlite3.Connection, work: Callable[[], object]) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    conn.set_progress_handler(count, 1)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


async def test_counts_follow_every_write_even_from_another_program(tmp_path: Path) -> None:
    path = tmp_path / "relayd.db"
    async with Store.open(path, POLICY) as store:
        now = time.time()
        await store.insert_webhooks(webhooks(10))
        await store.insert_webhooks(webhooks(2, prefix="old", received_at=now - 7200))
        await store.apply_acks([
            AckRecord("w0", True, 200, "", False), AckRecord("w1", True, 204, "", False),
            AckRecord("w2", False, 410, "gone", True), AckRecord("w3", False, 503, "busy", False),
            AckRecord("old0", False, 503, "busy", False),  # past the max age: dead letter
            AckRecord("w0", True, 200, "", False),  # a second ack changes nothing
        ], now)
        await store.expire_pending(now)  # old1
        with open_db(path) as other:
            other.execute("UPDATE webhooks SET status = 'pending' WHERE id = 'w2'")  # a replay
            other.execute("DELETE FROM webhooks WHERE id IN ('w1', 'w4')")  # a purge
            other.execute("BEGIN")
            other.execute("UPDATE webhooks SET status = 'failed'")
            other.execute("ROLLBACK")  # counts roll back with the rows
        counts = await store.counts()
    expected = {"pending": 7, "delivered": 1, "failed": 0, "dead_letter": 2}
    assert {s: counts[s] for s in expected} == expected
    assert counted_by_scan(path) == {s: n for s, n in expected.items() if n}


async def test_counts_cost_the_same_at_any_table_size(tmp_path: Path) -> None:
    costs = []
    for rows in (100, 5000):
        path = tmp_path / f"{rows}.db"
        async with Store.open(path) as store:
            await store.insert_webhooks(webhooks(rows))
        with open_db(path) as db:
            costs.append(vm_steps(db, partial(queries.counts, db)))
    assert costs[0] == costs[1]


async def test_acking_a_batch_costs_the_same_however_many_are_pending(tmp_path: Path) -> None:
    costs = []
    for pending in (100, 5000):
        path = tmp_path / f"{pending}.db"
        async with Store.open(path) as store:
            await store.insert_webhooks(webhooks(pending))
        acks = [AckRecord(f"w{i}", True, 200, "", False) for i in range(20)]
        with open_db(path) as db:
            db.execute("BEGIN")
            costs.append(vm_steps(db, partial(ack_sql.apply_acks, db, acks, time.time(),
                                              POLICY)))
            db.execute("ROLLBACK")
    assert costs[0] == costs[1]


async def test_a_database_from_before_the_counts_gets_them_on_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "relayd.db"
    write_v3_database(path, [  # as relayd before the counts left it
        {"id": f"w{i}", "endpoint_id": f"ep{i % 3}", "status": status}
        for i, status in enumerate(["delivered", "dead_letter", "pending", "pending", "pending"])
    ])
    async with Store.open(path) as store:
        counts = await store.counts()
        await store.insert_webhooks(webhooks(1, prefix="new"))
        after = await store.counts()
    assert (counts["pending"], counts["delivered"], counts["dead_letter"]) == (3, 1, 1)
    assert after["pending"] == 4
    with open_db(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
