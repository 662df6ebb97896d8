"""A database that refuses reads or writes never hangs the stop nor ends the edge daemon."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from relayd.edge.daemon import Relayd
from relayd.edge.store import NewWebhook, Store, StoredWebhook
from tests.conftest import start_edge
from tests.db import open_db
from tests.helpers import TestHub, make_config, post, wait_for

GRACE = 1.0
BUSY_TIMEOUT = 0.1
# Cancelling, closing the sockets and the store after the deadline, on a loaded machine.
STOP_SLACK = 1.0


def files_open_under(prefix: Path) -> list[str]:
    """Paths starting with ``prefix`` (the database, its -wal and -shm) this process holds."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(prefix)):
            found.append(target)
    return found


async def test_stop_ends_within_shutdown_grace_when_acks_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relayd")
    daemon = Relayd(make_config(tmp_path, shutdown_grace=GRACE,
                                store={"busy_timeout": BUSY_TIMEOUT}))
    path = daemon.config.store.path
    stopped = trio.Event()

    async def run_daemon(*, task_status: trio.TaskStatus[object]) -> None:
        await daemon.run(task_status=task_status)
        stopped.set()

    locker = sqlite3.connect(path, isolation_level=None)  # another program on the same file
    try:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(run_daemon)
            wid = (await post(addresses.ingress, "alpha", b"acked")).json()["id"]
            async with TestHub.connected(addresses.grpc) as hub:
                assert (await hub.recv_webhook()).id == wid
                locker.execute("BEGIN EXCLUSIVE")  # every ack write now fails after busy_timeout
                await hub.ack(wid)
                await wait_for(lambda: "writing 1 acks failed" in caplog.text)
                daemon.request_shutdown()
                asked = trio.current_time()
                with trio.fail_after(GRACE + BUSY_TIMEOUT + STOP_SLACK):
                    await stopped.wait()
                took = trio.current_time() - asked
                await hub.wait_end()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert GRACE <= took < GRACE + BUSY_TIMEOUT + STOP_SLACK
    assert "ack writer stopped with 1 acks not written" in caplog.text
    assert "shutdown_grace (1s) ran out while writing the last acks" in caplog.text
    assert files_open_under(path) == []  # the store was closed
    with open_db(path) as db:
        db.execute("PRAGMA busy_timeout = 0")
        db.execute("BEGIN EXCLUSIVE")  # nobody holds a lock any more
        status = db.execute("SELECT status FROM webhooks WHERE id = ?", (wid,)).fetchone()[0]
        db.execute("ROLLBACK")
    assert status == "pending"  # the ack was lost: the webhook will be delivered again


async def test_expiry_sweep_survives_a_locked_database_and_recovers(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relayd.edge.dispatcher")
    path = tmp_path / "relayd.db"
    async with Store.open(path) as store:
        await store.insert_webhooks([NewWebhook("too-old", "alpha", "POST", [], b"old",
                                                time.time() - 1000)])
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # writes fail after busy_timeout; WAL reads still work
    try:
        edge = await start_edge(nursery, tmp_path, store={"busy_timeout": BUSY_TIMEOUT},
                                max_age=600)
        # the sweep at start-up fails, and is retried with backoff, quietly
        await wait_for(lambda: caplog.text.count("the expiry sweep failed again") >= 2)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    store = edge.store
    assert store is not None

    async def expired() -> bool:
        row = await store.get("too-old")
        return row is not None and row["status"] == "dead_letter"

    await wait_for(lambda: "the expiry sweep works again after" in caplog.text)
    assert await expired()  # the retry after the lock was gone made it a dead letter
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING
                and "the expiry sweep failed" in r.getMessage()]
    assert len(warnings) == 1 and "database is locked" in warnings[0].getMessage()
    # the daemon never stopped: a new webhook still reaches a connected hub
    async with TestHub.connected(edge.addresses.grpc) as hub:
        wid = (await post(edge.addresses.ingress, "beta", b"after")).json()["id"]
        assert (await hub.recv_webhook()).id == wid


class RefusingReads(Store):
    """A real store whose dispatch reads fail while ``refusing`` is set.

    No lock held by another connection makes a WAL read fail while relayd's own connections
    are open (readers never wait for writers; exclusive locking mode cannot be taken then),
    so the read path is driven by raising what SQLite raises for a locked database.
    """

    refusing = False
    refused = 0

    async def next_pending(
        self, wanted: Sequence[tuple[str, int, int]]
    ) -> dict[str, list[StoredWebhook]]:
        if self.refusing:
            self.refused += 1
            raise sqlite3.OperationalError("database is locked")
        return await super().next_pending(wanted)


async def test_dispatcher_survives_failing_reads_and_delivers_after_recovery(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relayd.edge.dispatcher")
    edge = Relayd(make_config(tmp_path), store_type=RefusingReads)
    addresses = await nursery.start(edge.run)
    store = edge.store
    assert isinstance(store, RefusingReads)
    wid = (await post(addresses.ingress, "alpha", b"waits")).json()["id"]
    store.refusing = True
    async with TestHub.connected(addresses.grpc) as hub:
        await wait_for(lambda: store.refused >= 3)  # retried, with backoff
        store.refusing = False
        with trio.fail_after(5):
            assert (await hub.recv_webhook()).id == wid
        failures = [r for r in caplog.records if "reading pending webhooks failed" in
                    r.getMessage()]
        assert len(failures) == 1 and failures[0].levelno == logging.WARNING
        assert "database is locked" in failures[0].getMessage()
        await wait_for(lambda: "reading pending webhooks works again after" in caplog.text)
        # still running: the next webhook goes straight through
        second = (await post(addresses.ingress, "beta", b"next")).json()["id"]
        assert (await hub.recv_webhook()).id == second
