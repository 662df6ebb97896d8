"""The store and the ack writer on a real SQLite file (no network)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from relayd.edge.ack_writer import ACK_LINGER_SECONDS, AckWriter
from relayd.edge.config import RelayConfig
from relayd.edge.store import AckOutcome, AckRecord, NewWebhook, Store, retry_policy, schema
from tests.db import open_db


def webhooks(n: int, endpoint: str = "alpha", received_at: float | None = None
             ) -> list[NewWebhook]:
    at = time.time() if received_at is None else received_at
    return [NewWebhook(f"{endpoint}-{i}", endpoint, "POST", [("x-i", str(i))], bytes([i % 256]),
                       at) for i in range(n)]


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with Store.open(tmp_path / "relayd.db") as store:
        yield store


def test_retry_policy_doubles_from_one_second_capped_at_one_hour() -> None:
    policy = retry_policy(RelayConfig())
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert policy.delay(12) == 2048 and policy.delay(13) == 3600 and policy.delay(500) == 3600


async def test_store_uses_wal_and_full_sync(store: Store) -> None:
    with open_db(store.path) as other:  # WAL is recorded in the file itself
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = schema.connect(store.path, busy_timeout=1)  # how the store opens each connection
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


async def test_schema_is_migrated_on_reopen(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db.sqlite") as first:
        await first.insert_webhooks(webhooks(3))
    async with Store.open(tmp_path / "db.sqlite") as again:
        assert (await again.counts())["pending"] == 3


async def test_acks_are_applied_in_batches(store: Store) -> None:
    await store.insert_webhooks(webhooks(300))
    applied: list[list[AckOutcome]] = []
    writer = AckWriter(store, lambda outcomes: applied.append(list(outcomes)))
    # all 300 acks are queued before the writer starts: they must share transactions
    for i in range(300):
        writer.sink.send_nowait(AckRecord(f"alpha-{i}", True, 200, "", False))
    writer.close()
    await writer.run()
    assert writer.applied == 300
    assert writer.batches == 1
    assert [len(batch) for batch in applied] == [300]
    counts = await store.counts()
    assert counts["delivered"] == 300 and counts["pending"] == 0


async def test_acks_arriving_one_at_a_time_within_the_linger_share_a_transaction(
    store: Store, autojump_clock: trio.abc.Clock
) -> None:
    await store.insert_webhooks(webhooks(3))
    applied: list[list[AckOutcome]] = []
    writer = AckWriter(store, lambda outcomes: applied.append(list(outcomes)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        # live traffic: one ack now and then, each well within the linger of the first
        for i in range(3):
            await writer.sink.send(AckRecord(f"alpha-{i}", True, 200, "", False))
            await trio.sleep(ACK_LINGER_SECONDS / 5)
        writer.close()
    assert [len(batch) for batch in applied] == [3]
    assert writer.batches == 1


async def test_stored_webhooks_come_back_with_their_seq_as_a_read_gives_them(
    store: Store
) -> None:
    await store.insert_webhooks(webhooks(2, "alpha"))
    await store.retry_webhook("nothing", time.time())  # a no-op write between batches
    stored = await store.insert_webhooks(webhooks(3, "beta") + webhooks(2, "gamma"))
    read = await store.next_pending([("beta", 0, 10), ("gamma", 0, 10)])
    assert stored == read["beta"] + read["gamma"]
    assert [w.seq for w in stored] == [3, 4, 5, 6, 7]


async def test_ack_for_unknown_or_final_webhook_is_ignored_with_a_log_line(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await store.insert_webhooks(webhooks(1))
    outcomes: list[AckOutcome] = []
    writer = AckWriter(store, outcomes.extend)
    writer.sink.send_nowait(AckRecord("alpha-0", True, 200, "", False))
    writer.sink.send_nowait(AckRecord("alpha-0", False, 500, "late", False))
    writer.sink.send_nowait(AckRecord("no-such-id", True, 200, "", False))
    writer.close()
    await writer.run()
    assert [(o.webhook_id, o.outcome) for o in outcomes] == [
        ("alpha-0", "delivered"), ("alpha-0", "ignored"), ("no-such-id", "ignored")]
    row = await store.get("alpha-0")
    assert row is not None and row["status"] == "delivered" and row["last_error"] is None
    assert "ack ignored webhook_id='alpha-0' reason=already delivered" in caplog.text
    assert "ack ignored webhook_id='no-such-id' reason=unknown webhook id" in caplog.text


async def test_transient_failure_schedules_next_attempt(store: Store) -> None:
    now = 1_700_000_000.0
    await store.insert_webhooks(webhooks(1, received_at=now))
    [outcome] = await store.apply_acks([AckRecord("alpha-0", False, 503, "busy", False)], now)
    assert outcome.outcome == "retry" and outcome.next_attempt_at == now + 1
    [outcome] = await store.apply_acks([AckRecord("alpha-0", False, 503, "busy", False)],
                                       now + 1)
    assert outcome.next_attempt_at == now + 1 + 2
    row = await store.get("alpha-0")
    assert row is not None and row["attempts"] == 2 and row["status"] == "pending"
    assert row["next_attempt_at"] == now + 3


async def test_pending_past_max_age_expire_to_dead_letter(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db", retry_policy(RelayConfig(max_age=100))) as store:
        now = time.time()
        await store.insert_webhooks(webhooks(2, "old", received_at=now - 101))
        await store.insert_webhooks(webhooks(1, "new", received_at=now))
        expired = await store.expire_pending(now, exclude=["old-1"])
        assert expired == ["old-0"]
        counts = await store.counts()
        assert counts["dead_letter"] == 1 and counts["pending"] == 2


async def test_next_pending_reads_in_order_after_cursor(store: Store) -> None:
    await store.insert_webhooks(webhooks(5))
    first = (await store.next_pending([("alpha", 0, 2)]))["alpha"]
    assert [w.id for w in first] == ["alpha-0", "alpha-1"]
    rest = (await store.next_pending([("alpha", first[-1].seq, 10)]))["alpha"]
    assert [w.id for w in rest] == ["alpha-2", "alpha-3", "alpha-4"]
    assert rest[0].headers == (("x-i", "2"),) and rest[0].body == b"\x02"


async def test_store_calls_do_not_block_the_event_loop(store: Store) -> None:
    # While a big insert runs on its worker thread, the event loop keeps ticking.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await store.insert_webhooks(webhooks(20000, "bulk"))
        nursery.cancel_scope.cancel()
    assert ticks > 10


def test_prebuilt_envelope_bytes_equal_the_protobuf_message() -> None:
    from relayd.edge.envelopes import envelope_head, stream_response
    from relayd.wire import pb

    headers = [("content-type", "application/json"), ("x-tag", "a"), ("x-tag", "b")]
    head = envelope_head("w1", "alpha", 1_700_000_000.123456, headers, method="PUT",
                         path="/a%2Fb/\xe9 c", query="x=1%202&y\xff", remote_addr="::1")
    body = bytes(range(256)) * 600  # long enough for multi-byte length varints
    data = stream_response(head, body, "http://dest/alpha", 300)
    expected = pb.WebhookEnvelope(id="w1", endpoint_id="alpha",
                                  destination_url="http://dest/alpha",
                                  headers={"content-type": "application/json", "x-tag": "a, b"},
                                  payload=body, attempt=300, method="PUT",
                                  # received bytes outside 0x21-0x7E go as %XX
                                  path="/a%2Fb/%E9%20c", query="x=1%202&y%FF",
                                  remote_addr="::1")
    expected.received_at.FromNanoseconds(1_700_000_000_123_456_000)
    assert pb.StreamResponse.FromString(data) == pb.StreamResponse(webhook=expected)
    empty = pb.StreamResponse.FromString(stream_response(head, b"", "", 1))
    assert empty.webhook.payload == b"" and empty.webhook.attempt == 1
