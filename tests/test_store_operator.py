"""The store behind the operator's API: schema 5, counts any writer keeps, index-only pages."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relayd.edge.store import AckRecord, NewWebhook, Store, queries
from relayd.edge.store.schema import SCHEMA_VERSION
from tests.db import open_db, write_v3_database


async def test_v3_database_migrates_with_counts_last_delivery_and_last_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relayd.db"
    future = time.time() + 600
    write_v3_database(path, [
        {"id": "a-done", "endpoint_id": "alpha", "status": "delivered", "attempts": 1,
         "delivered_at": 1100.0, "updated_at": 1100.0, "last_status_code": 200},
        {"id": "a-gone", "endpoint_id": "alpha", "status": "failed", "attempts": 1,
         "updated_at": 1200.0, "last_status_code": 410, "last_error": "HTTP 410 Gone"},
        {"id": "a-wait", "endpoint_id": "alpha", "status": "pending", "received_at": 1300.0},
        {"id": "b-busy", "endpoint_id": "beta", "status": "pending", "attempts": 2,
         "updated_at": 1400.0, "next_attempt_at": future, "last_status_code": 503,
         "last_error": "HTTP 503 Service Unavailable"},
        {"id": "b-dead", "endpoint_id": "beta", "status": "dead_letter", "attempts": 1,
         "updated_at": 1350.0, "last_error": "expired undelivered"},
    ])
    async with Store.open(path) as store:
        counts = await store.counts()
        assert {k: counts[k] for k in ("pending", "delivered", "failed", "dead_letter")} == \
            {"pending": 2, "delivered": 1, "failed": 1, "dead_letter": 1}
        states = await store.endpoint_states(["alpha", "beta", "gamma"], time.time())
        alpha, beta, gamma = states["alpha"], states["beta"], states["gamma"]
        assert alpha.counts == {"pending": 1, "delivered": 1, "failed": 1, "dead_letter": 0}
        assert (alpha.head_received_at, alpha.last_delivered_at) == (1300.0, 1100.0)
        assert alpha.last_error == ("a-gone", 1200.0, 410, "HTTP 410 Gone")
        assert alpha.next_attempt_at is None
        assert beta.last_error == ("b-busy", 1400.0, 503, "HTTP 503 Service Unavailable")
        assert beta.next_attempt_at == future and beta.last_delivered_at is None
        assert gamma.counts["pending"] == 0 and gamma.last_error is None
        # rows from before have no last_attempt_at: their last update stands for it
        listed = {w.id: w for w in await store.list_webhooks(limit=10)}
        assert listed["a-gone"].last_attempt_at == 1200.0
        assert listed["a-wait"].last_attempt_at is None
        assert [w.id for w in await store.list_webhooks(endpoint_id="beta", limit=10)] == \
            ["b-dead", "b-busy"]
    with open_db(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_counts_follow_every_writer_not_only_relayd(tmp_path: Path) -> None:
    path = tmp_path / "relayd.db"
    async with Store.open(path) as store:
        await store.insert_webhooks([NewWebhook(f"w{i}", "alpha", "POST", [], b"", 1.0)
                                     for i in range(4)])
        await store.apply_acks([AckRecord("w0", True, 200, "", False)], 2.0)
        with open_db(path) as other:  # a retention job, the sqlite3 shell
            other.execute("DELETE FROM webhooks WHERE id IN ('w0', 'w1')")
            other.execute("UPDATE webhooks SET status = 'failed' WHERE id = 'w2'")
        counts = await store.counts()
        assert {k: counts[k] for k in ("pending", "delivered", "failed")} == \
            {"pending": 1, "delivered": 0, "failed": 1}
        states = await store.endpoint_states(["alpha"], 3.0)
        assert states["alpha"].counts["pending"] == 1
        assert states["alpha"].last_delivered_at == 2.0


ROWS = 20_000
# SQLite virtual machine instructions per progress callback.
STEP = 100


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20k webhooks over three endpoints, one in ten failed, one in ten delivered."""
    import trio

    path = tmp_path_factory.mktemp("big") / "relayd.db"

    async def fill() -> None:
        async with Store.open(path) as store:
            for start in range(0, ROWS, 5000):
                await store.insert_webhooks([
                    NewWebhook(f"w{i}", ("alpha", "beta", "gamma")[i % 3], "POST", [], b"x",
                               float(i)) for i in range(start, start + 5000)])
            await store.apply_acks([AckRecord(f"w{i}", i % 2 == 0, 200 if i % 2 == 0 else 410,
                                              "", i % 2 == 1)
                                    for i in range(0, ROWS, 5)], float(ROWS))

    trio.run(fill)
    return path


def instructions(conn: sqlite3.Connection, call: Callable[[], object]) -> int:
    count = 0

    def tick() -> int:
        nonlocal count
        count += STEP
        return 0

    conn.set_progress_handler(tick, STEP)
    try:
        call()
    finally:
        conn.set_progress_handler(None, STEP)
    return count


@pytest.mark.parametrize("status", [None, "pending", "failed"])
@pytest.mark.parametrize("endpoint_id", [None, "beta"])
@pytest.mark.parametrize("before", [None, ROWS // 2, 200])
def test_a_page_costs_the_same_at_any_depth_of_a_big_store(
    big_store: Path, status: str | None, endpoint_id: str | None, before: int | None,
) -> None:
    with open_db(big_store) as conn:
        scan = instructions(conn, lambda: conn.execute(
            "SELECT COUNT(*) FROM webhooks WHERE status = 'pending'").fetchall())
        page: list[object] = []
        cost = instructions(conn, lambda: page.extend(queries.list_webhooks(
            conn, status=status, endpoint_id=endpoint_id, before=before, limit=50)))
    assert len(page) == 50 or (before == 200 and len(page) > 0)
    # index steps for 50 rows, not a walk over the 20k (which a scan costs)
    assert scan > 40_000 and cost < 5_000, (scan, cost)


def test_status_reads_cost_nothing_like_a_count(big_store: Path) -> None:
    with open_db(big_store) as conn:
        cost = instructions(conn, lambda: (
            queries.counts(conn), queries.endpoint_states(conn, ["alpha", "beta", "gamma"],
                                                          float(ROWS))))
    assert cost < 2_000, cost


async def test_retry_and_replay_count_toward_the_endpoints_pending(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "relayd.db") as store:
        await store.insert_webhooks([NewWebhook("w", "alpha", "POST", [], b"", time.time())])
        await store.apply_acks([AckRecord("w", False, 410, "gone", True)], time.time())
        assert store.pending_count("alpha") == 0
        await store.retry_webhook("w", time.time())
        assert store.pending_count("alpha") == 1
        await store.retry_webhook("w", time.time())  # pending already: no change
        assert store.pending_count("alpha") == 1
        await store.replay("w", "copy", time.time())
        await store.apply_acks([AckRecord("w", False, 410, "gone", True)], time.time())
        assert store.pending_count("alpha") == 1
        assert await store.retry_endpoint("alpha", ["failed"], time.time(), lambda _: None) == 1
        assert store.pending_count("alpha") == 2
