"""Retention: final webhooks are deleted once kept long enough, and the file stops growing.

Store-level tests on a real SQLite file, with the wall clock given to `Retention` (the
database holds Unix times) and trio's clock for the rounds' timing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
import trio
import trio.testing

from relayd.edge.config import ConfigError, StoreConfig
from relayd.edge.retention import BATCH_ROWS, SPARE_FRACTION, Retention
from relayd.edge.store import AckRecord, NewWebhook, RetryPolicy, Store, schema
from relayd.edge.store import retention as store_retention
from tests.conftest import start_edge
from tests.db import open_db
from tests.helpers import make_config, wait_for

T0 = 1_800_000_000.0  # a Unix time: rows are received, delivered and failed from here
DAY = 24 * 3600.0
# max_age = 100 s: a pending webhook received at T0 becomes a dead letter at T0 + 100
RETRY = RetryPolicy(initial=1.0, maximum=10.0, max_age=100.0)


def new(ids: list[str], at: float, body: bytes = b"{}", endpoint: str = "alpha"
        ) -> list[NewWebhook]:
    return [NewWebhook(i, endpoint, "POST", [("content-type", "application/json")], body, at)
            for i in ids]


def delivered(ids: list[str]) -> list[AckRecord]:
    return [AckRecord(i, True, 200, "", False) for i in ids]


class Clock:
    """The Unix time `Retention` reads, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "relayd.db", RETRY) as store:
        yield store


async def present(store: Store, ids: list[str]) -> list[str]:
    return [i for i in ids if await store.get(i) is not None]


async def test_a_round_deletes_exactly_the_webhooks_kept_long_enough(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await store.insert_webhooks(new(["d1", "d2", "f1", "p1", "x1"], at=T0))
    await store.apply_acks(delivered(["d1"]), now=T0 + 10)
    await store.apply_acks(delivered(["d2"]), now=T0 + 20)
    await store.apply_acks([AckRecord("f1", False, 404, "not found", True)], now=T0 + 15)
    # x1 becomes a dead letter at T0 + 100; p1 stays pending (excluded: "in flight")
    assert await store.expire_pending(T0 + 100, exclude=["p1"]) == ["x1"]
    clock = Clock(T0)
    retention = Retention(store, keep_delivered=1000, keep_failed=5000, clock=clock)
    everything = ["d1", "d2", "f1", "p1", "x1"]
    caplog.set_level(logging.INFO, logger="relayd.edge.retention")

    expected = [  # (round at, what is left after it)
        (T0 + 1009, everything),  # d1 delivered 999 s ago: kept
        (T0 + 1010, ["d2", "f1", "p1", "x1"]),  # d1: exactly keep_delivered
        (T0 + 1020, ["f1", "p1", "x1"]),
        (T0 + 5014, ["f1", "p1", "x1"]),  # failed at T0 + 15: 4999 s
        (T0 + 5015, ["p1", "x1"]),
        (T0 + 5099, ["p1", "x1"]),  # dead letter since T0 + 100 (its updated_at)
        (T0 + 5100, ["p1"]),
        (T0 + 10_000 * DAY, ["p1"]),  # pending: never
    ]
    deleted_per_round = []
    for at, left in expected:
        clock.now = at
        report = await retention.run_round()
        assert await present(store, everything) == left, at - T0
        deleted_per_round.append({k: v for k, v in report.deleted.items() if v})
    assert deleted_per_round == [{}, {"delivered": 1}, {"delivered": 1}, {}, {"failed": 1},
                                 {}, {"dead_letter": 1}, {}]
    assert (await store.counts())["pending"] == 1
    # one INFO line per round that deleted something, none for the others
    lines = [r.getMessage() for r in caplog.records if r.name == "relayd.edge.retention"]
    assert len(lines) == 4
    assert lines[0].startswith("retention deleted delivered=1 failed=0 dead_letter=0 "
                               "transactions=1 reclaimed_bytes=")


async def test_keep_zero_keeps_final_webhooks_forever(store: Store) -> None:
    await store.insert_webhooks(new(["d1", "f1"], at=T0))
    await store.apply_acks(delivered(["d1"]), now=T0)
    await store.apply_acks([AckRecord("f1", False, 410, "gone", True)], now=T0)
    late = Clock(T0 + 10_000 * DAY)
    report = await Retention(store, keep_delivered=0, keep_failed=1, clock=late).run_round()
    assert report.deleted == {"delivered": 0, "failed": 1, "dead_letter": 0}
    await Retention(store, keep_delivered=0, keep_failed=0, clock=late).run_round()
    assert await present(store, ["d1", "f1"]) == ["d1"]


async def test_the_store_refuses_to_delete_pending_webhooks(store: Store) -> None:
    await store.insert_webhooks(new(["p1"], at=T0))
    with pytest.raises(ValueError, match="pending"):
        await store.delete_expired({"pending": T0 + DAY}, 500, 2**20)
    assert await present(store, ["p1"]) == ["p1"]


async def test_rounds_run_at_start_then_every_interval(
        store: Store, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    # trio's clock starts at 0 here: the Unix time is T0 + trio time
    await store.insert_webhooks(new(["d1"], at=T0))
    await store.apply_acks(delivered(["d1"]), now=T0)
    retention = Retention(store, keep_delivered=70, keep_failed=70, interval=30,
                          clock=lambda: T0 + trio.current_time())
    await nursery.start(retention.run)
    rounds = []
    for count in range(1, 5):
        report = await retention.wait_rounds(count)
        rounds.append((trio.current_time(), report.deleted["delivered"]))
    # rounds at 0, 30, 60 s keep it (70 s not reached); the one at 90 s deletes it
    assert rounds == [(0, 0), (30, 0), (60, 0), (90, 1)]


async def test_a_round_of_1200_expired_webhooks_runs_in_transactions_of_500(
        store: Store) -> None:
    ids = [f"w{i}" for i in range(1200)]
    await store.insert_webhooks(new(ids, at=T0))
    await store.apply_acks(delivered(ids[:700]), now=T0)
    await store.apply_acks([AckRecord(i, False, 400, "bad", True) for i in ids[700:]], now=T0)
    report = await Retention(store, keep_delivered=60, keep_failed=60,
                             clock=Clock(T0 + 60)).run_round()
    assert BATCH_ROWS == 500
    # oldest status first (delivered), each transaction filled up to 500 across statuses
    assert [dict(b) for b in report.batches] == [
        {"delivered": 500, "failed": 0, "dead_letter": 0},
        {"delivered": 200, "failed": 300, "dead_letter": 0},
        {"delivered": 0, "failed": 200, "dead_letter": 0},
    ]
    assert (await store.counts())["delivered"] == (await store.counts())["failed"] == 0


async def test_a_transaction_holds_batch_bytes_of_bodies_or_one_larger_body(
        store: Store) -> None:
    ids = [f"w{i}" for i in range(10)]
    await store.insert_webhooks(new(ids[:9], at=T0, body=bytes(1000)))
    await store.insert_webhooks(new(ids[9:], at=T0, body=bytes(5000)))  # alone over it
    await store.apply_acks(delivered(ids[:9]), now=T0)
    await store.apply_acks(delivered(ids[9:]), now=T0 + 1)
    retention = Retention(store, keep_delivered=1, batch_bytes=3500, clock=Clock(T0 + 2))
    report = await retention.run_round()
    assert [b["delivered"] for b in report.batches] == [3, 3, 3, 1]


class RecordingStore(Store):
    """A real store that notes the order in which its writes finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[str] = []

    async def insert_webhooks(self, webhooks: Sequence[NewWebhook]) -> None:
        await super().insert_webhooks(webhooks)
        self.writes.append("insert")

    async def delete_expired(self, cutoffs: Mapping[str, float], limit: int,
                             max_bytes: int) -> dict[str, int]:
        counts = await super().delete_expired(cutoffs, limit, max_bytes)
        self.writes.append(f"delete {sum(counts.values())}")
        return counts


async def test_an_ingest_write_goes_between_two_batches_of_a_round(tmp_path: Path) -> None:
    async with RecordingStore.open(tmp_path / "relayd.db", RETRY) as store:
        assert isinstance(store, RecordingStore)
        ids = [f"w{i}" for i in range(1200)]
        await store.insert_webhooks(new(ids, at=T0, body=bytes(2000)))
        await store.apply_acks(delivered(ids), now=T0)
        store.writes.clear()
        retention = Retention(store, keep_delivered=60, clock=Clock(T0 + 60))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retention.run_round)
            # the round is in its first transaction: the insert has to wait for the writer
            await trio.testing.wait_all_tasks_blocked()
            await store.insert_webhooks(new(["fresh"], at=T0 + 60))
        # the insert did not wait for the whole round
        assert store.writes.index("insert") < store.writes.index("delete 200")
        # (a round ends with a transaction that finds nothing left)
        assert [w for w in store.writes if w != "insert"] == ["delete 500", "delete 500",
                                                              "delete 200", "delete 0"]


async def test_a_round_refused_by_a_locked_database_is_tried_again_next_round(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="relayd.edge.retention")
    path = tmp_path / "relayd.db"
    async with Store.open(path, RETRY, busy_timeout=0.05) as store:
        await store.insert_webhooks(new(["d1"], at=T0))
        await store.apply_acks(delivered(["d1"]), now=T0)
        retention = Retention(store, keep_delivered=1, interval=0.1, clock=Clock(T0 + 10))
        with open_db(path) as locker:
            locker.execute("BEGIN EXCLUSIVE")  # another process writing: writes time out
            async with trio.open_nursery() as nursery:
                await nursery.start(retention.run)
                await wait_for(lambda: "a round failed (3 in a row)" in caplog.text)
                locker.execute("ROLLBACK")
                with trio.fail_after(5):
                    report = await retention.wait_rounds(1)
                nursery.cancel_scope.cancel()
        assert report.deleted["delivered"] == 1
        assert await present(store, ["d1"]) == []
    failures = [r for r in caplog.records if "a round failed" in r.getMessage()]
    assert [r.levelno for r in failures[:3]] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "database is locked" in failures[0].getMessage()
    assert "retention works again after" in caplog.text


async def _round_cost(tmp_path: Path, kept: int) -> int:
    """SQLite VM instructions of a round deleting 10 rows, with ``kept`` delivered rows
    that are not old enough yet."""
    path = tmp_path / f"cost-{kept}.db"
    async with Store.open(path, RETRY) as store:
        old = [f"old{i}" for i in range(10)]
        young = [f"young{i}" for i in range(kept)]
        await store.insert_webhooks(new(old + young, at=T0))
        await store.apply_acks(delivered(old), now=T0)
        await store.apply_acks(delivered(young), now=T0 + DAY)
    conn = schema.connect(path, busy_timeout=1)
    try:
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(count, 100)
        deleted = store_retention.delete_expired(conn, {"delivered": T0 + 1}, 500, 2**20)
        conn.set_progress_handler(None, 0)
        conn.rollback()
        assert deleted == {"delivered": 10}
        return steps * 100
    finally:
        conn.close()


async def test_a_round_does_not_read_the_rows_it_keeps(tmp_path: Path) -> None:
    few, many = await _round_cost(tmp_path, 1000), await _round_cost(tmp_path, 20_000)
    # a scan of the delivered rows would cost 20 times more with 20 times as many
    assert many < 1.5 * few, (few, many)


async def test_a_new_database_gives_the_deleted_space_back(store: Store) -> None:
    assert (await store.space()).incremental
    ids = [f"w{i}" for i in range(2000)]
    await store.insert_webhooks(new(ids, at=T0, body=bytes(4000)))
    await store.apply_acks(delivered(ids), now=T0)
    full = await store.space()
    report = await Retention(store, keep_delivered=1, clock=Clock(T0 + 1)).run_round()
    after = await store.space()
    # the bodies' pages, handed back but for a tenth of what is left, kept for new rows
    assert report.reclaimed_bytes >= 2000 * 4000
    assert 0 < after.freelist_count <= SPARE_FRACTION * after.page_count
    assert after.size_bytes == full.size_bytes - report.reclaimed_bytes


def make_old_database(path: Path) -> None:
    """A database file created the way relayd did before retention: no auto_vacuum."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        schema.migrate(sqlite_utils.Database(conn))
        conn.commit()
    finally:
        conn.close()


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
               if p.exists())


ROUND_BYTES = 200 * 2000  # webhook bodies per round in the load below


async def _sizes_under_steady_load(path: Path, keep_delivered: float) -> list[int]:
    """Per round (a minute): 200 webhooks of 2 KB in, delivered, a retention round. The
    database's size (file + WAL on disk) after each of 30 rounds."""
    sizes = []
    async with Store.open(path, RETRY) as store:
        clock = Clock(T0)
        retention = Retention(store, keep_delivered=keep_delivered, clock=clock)
        for minute in range(30):
            clock.now = T0 + 60 * minute
            ids = [f"m{minute}-{i}" for i in range(200)]
            await store.insert_webhooks(new(ids, at=clock.now, body=bytes(2000)))
            await store.apply_acks(delivered(ids), now=clock.now)
            await retention.run_round()
            sizes.append(disk_bytes(path))
    return sizes


@pytest.mark.parametrize("created", ["new", "before retention"])
async def test_the_database_stops_growing_under_steady_load(tmp_path: Path,
                                                            created: str) -> None:
    kept, forever = tmp_path / "kept.db", tmp_path / "forever.db"
    if created == "before retention":
        make_old_database(kept)
        make_old_database(forever)
    # three minutes of webhooks kept: 600-800 rows, whatever the total
    with_retention = await _sizes_under_steady_load(kept, keep_delivered=180)
    without = await _sizes_under_steady_load(forever, keep_delivered=0)
    # 4000 more webhooks after the tenth round: no more room than one round's worth...
    assert max(with_retention[10:]) - max(with_retention[:10]) < ROUND_BYTES, with_retention
    # ...where the same load kept forever grows by at least their bodies' size
    assert without[29] - without[10] > 19 * ROUND_BYTES, without


async def test_an_old_database_keeps_its_mode_and_reuses_the_space(tmp_path: Path) -> None:
    make_old_database(path := tmp_path / "old.db")
    async with Store.open(path, RETRY) as store:
        assert not (await store.space()).incremental
        ids = [f"w{i}" for i in range(500)]
        await store.insert_webhooks(new(ids, at=T0, body=bytes(4000)))
        await store.apply_acks(delivered(ids), now=T0)
        report = await Retention(store, keep_delivered=1, clock=Clock(T0 + 1)).run_round()
        assert report.reclaimed_bytes == 0
        assert (await store.space()).freelist_count >= 500
    with open_db(path) as conn:  # the retention indexes were added to it
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"webhooks_delivered_by_final_time", "webhooks_failed_by_final_time",
            "webhooks_dead_letter_by_final_time"} <= names


def test_keep_times_default_to_7_and_30_days_and_0_means_forever(tmp_path: Path) -> None:
    assert make_config(tmp_path).store == StoreConfig(path=tmp_path / "relayd.db")
    assert (StoreConfig.keep_delivered, StoreConfig.keep_failed) == (7 * DAY, 30 * DAY)
    config = make_config(tmp_path, store={"keep_delivered": 0, "keep_failed": 3600.5})
    assert (config.store.keep_delivered, config.store.keep_failed) == (0.0, 3600.5)
    with pytest.raises(ConfigError, match=r"store\.keep_failed: must be a number of seconds >= 0"):
        make_config(tmp_path, store={"keep_failed": -1})
    with pytest.raises(ConfigError, match=r"store\.keep_delivered: must be a positive number"):
        make_config(tmp_path, store={"keep_delivered": False})
    with pytest.raises(ConfigError, match=r"store\.keep_delivered: must be a positive number"):
        make_config(tmp_path, store={"keep_delivered": "7d"})


async def test_relayd_deletes_expired_webhooks_at_start(tmp_path: Path,
                                                        nursery: trio.Nursery) -> None:
    long_ago = time.time() - 8 * DAY
    async with Store.open(tmp_path / "relayd.db") as store:
        await store.insert_webhooks(new(["old", "young"], at=long_ago))
        await store.apply_acks(delivered(["old"]), now=long_ago)
        await store.apply_acks(delivered(["young"]), now=time.time())
    daemon = await start_edge(nursery, tmp_path)
    assert daemon.retention is not None and daemon.store is not None
    with trio.fail_after(10):
        report = await daemon.retention.wait_rounds(1)
    assert report.deleted["delivered"] == 1
    assert await present(daemon.store, ["old", "young"]) == ["young"]
