"""Dispatcher and ack writer behaviour through a running edge and a test hub."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from pathlib import Path

import httpx
import trio

from relayd.edge.daemon import Relayd
from tests.conftest import start_edge
from tests.db import open_db
from tests.helpers import TestHub, post, wait_for


async def stored_status(edge: Relayd, webhook_id: str) -> str:
    assert edge.store is not None
    row = await edge.store.get(webhook_id)
    assert row is not None
    return str(row["status"])


async def test_pending_webhooks_pushed_to_connected_hub(edge: Relayd) -> None:
    ids = [(await post(edge.addresses.ingress, "alpha", f"{i}".encode())).json()["id"]
           for i in range(3)]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        for expected in ids:
            webhook = await hub.recv_webhook()
            assert webhook.id == expected
            assert webhook.attempt == 1
            await hub.ack(webhook.id)


async def test_acks_update_webhook_status_in_database(edge: Relayd) -> None:
    ok = (await post(edge.addresses.ingress, "alpha", b"ok")).json()["id"]
    bad = (await post(edge.addresses.ingress, "beta", b"bad")).json()["id"]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        got = {(await hub.recv_webhook()).id for _ in range(2)}
        assert got == {ok, bad}
        await hub.ack(ok, status_code=204)
        await hub.ack(bad, success=False, status_code=404, error="not found", permanent=True)
        # a success frees its slot on arrival; its row is written by the ack writer after
        async def both_recorded() -> bool:
            return (await stored_status(edge, ok), await stored_status(edge, bad)) \
                == ("delivered", "failed")
        await wait_for(both_recorded)
    row = await edge.store.get(ok)
    assert row["status"] == "delivered" and row["delivered_at"] and row["last_status_code"] == 204
    row = await edge.store.get(bad)
    assert row["status"] == "failed" and row["last_error"] == "not found"


async def test_order_per_endpoint_kept_under_transient_failure(edge: Relayd) -> None:
    a = [(await post(edge.addresses.ingress, "alpha", f"a{i}".encode())).json()["id"]
         for i in range(3)]
    b = [(await post(edge.addresses.ingress, "beta", f"b{i}".encode())).json()["id"]
         for i in range(2)]
    seen: list[tuple[str, int]] = []
    async with TestHub.connected(edge.addresses.grpc) as hub:
        failed_once = False
        with trio.fail_after(10):
            while not {*a, *b} <= {wid for wid, _ in seen if wid}:
                webhook = await hub.recv_webhook()
                seen.append((webhook.id, webhook.attempt))
                if webhook.id == a[0] and not failed_once:
                    failed_once = True
                    await hub.ack(webhook.id, success=False, status_code=503, error="busy")
                else:
                    await hub.ack(webhook.id)
        # a success frees its slot on arrival; its row is written by the ack writer after
        async def retried_one_recorded() -> bool:
            return await stored_status(edge, a[0]) == "delivered"
        await wait_for(retried_one_recorded)
    order_a = [(wid, attempt) for wid, attempt in seen if wid in a]
    assert order_a == [(a[0], 1), (a[0], 2), (a[1], 1), (a[2], 1)]
    # beta is independent: it did not wait for alpha's backoff
    assert [wid for wid, _ in seen if wid in b] == b
    assert seen.index((b[1], 1)) < seen.index((a[0], 2))
    row = await edge.store.get(a[0])
    assert row["attempts"] == 2 and row["status"] == "delivered"


async def test_transient_failures_back_off_exponentially(nursery: trio.Nursery,
                                                         tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, retry_initial=0.2, retry_max=0.4)
    wid = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    sent_at: list[float] = []
    async with TestHub.connected(edge.addresses.grpc) as hub:
        for attempt in range(1, 5):
            webhook = await hub.recv_webhook()
            assert (webhook.id, webhook.attempt) == (wid, attempt)
            sent_at.append(trio.current_time())
            await hub.ack(wid, success=False, status_code=500, error="boom")
        await wait_for(lambda: edge.ack_writer.applied == 4)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    # 0.2 s, 0.4 s, then capped at 0.4 s; never early
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.4
    assert gaps[2] < 1.5
    row = await edge.store.get(wid)
    assert row["status"] == "pending" and row["attempts"] == 4 and row["last_error"] == "boom"


async def test_permanent_failure_marks_failed_and_next_goes(edge: Relayd) -> None:
    first = (await post(edge.addresses.ingress, "alpha", b"1")).json()["id"]
    second = (await post(edge.addresses.ingress, "alpha", b"2")).json()["id"]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
        assert webhook.id == first
        await hub.ack(first, success=False, status_code=400, error="bad", permanent=True)
        assert (await hub.recv_webhook()).id == second
    assert await stored_status(edge, first) == "failed"


async def test_in_flight_webhook_without_ack_is_not_resent_until_disconnect(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, poll_interval=0.05)
    wid = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == wid
        rounds = edge.dispatcher.rounds
        await wait_for(lambda: edge.dispatcher.rounds >= rounds + 10)
        with trio.move_on_after(0):
            extra = await hub.recv()
            raise AssertionError(f"unexpected message {extra}")
        assert edge.manager.statistics().in_flight == 1
    await wait_for(lambda: not edge.manager.is_connected())
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
        assert webhook.id == wid and webhook.attempt == 1


async def test_dispatcher_wakes_immediately_when_a_webhook_is_stored(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, poll_interval=30)
    async with TestHub.connected(edge.addresses.grpc) as hub:
        start = time.monotonic()
        wid = (await post(edge.addresses.ingress, "alpha")).json()["id"]
        with trio.fail_after(2):
            assert (await hub.recv_webhook()).id == wid
        assert time.monotonic() - start < 1.0


async def test_dispatcher_polls_for_rows_written_by_another_process(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, poll_interval=0.1)
    wid = uuid.uuid4().hex
    with open_db(edge.config.store.path) as other:
        other.execute(
            "INSERT INTO webhooks (id, endpoint_id, method, headers, body, received_at, status,"
            " updated_at) VALUES (?, 'gamma', 'POST', ?, ?, ?, 'pending', ?)",
            (wid, json.dumps([["x-from", "elsewhere"]]), b"\x00\x01", time.time(), time.time()),
        )
    async with TestHub.connected(edge.addresses.grpc) as hub:
        with trio.fail_after(3):
            webhook = await hub.recv_webhook()
        assert webhook.id == wid and webhook.payload == b"\x00\x01"
        assert dict(webhook.headers) == {"x-from": "elsewhere"}


async def test_hub_endpoint_filter_only_gets_its_endpoints(edge: Relayd) -> None:
    await post(edge.addresses.ingress, "alpha")
    beta = (await post(edge.addresses.ingress, "beta")).json()["id"]
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["beta"]) as hub:
        assert (await hub.recv_webhook()).id == beta
        await hub.ack(beta)
        rounds = edge.dispatcher.rounds
        await wait_for(lambda: edge.dispatcher.rounds >= rounds + 3)
        with trio.move_on_after(0):
            raise AssertionError(f"unexpected {await hub.recv()}")


async def test_old_undelivered_webhook_becomes_dead_letter_on_failure(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, max_age=1)
    wid = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    # age the row instead of waiting: it arrived two seconds ago
    with open_db(edge.config.store.path) as other:
        other.execute("UPDATE webhooks SET received_at = received_at - 2 WHERE id = ?", (wid,))
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == wid
        await hub.ack(wid, success=False, status_code=503, error="down")
        await wait_for(lambda: edge.manager.statistics().in_flight == 0)
    assert await stored_status(edge, wid) == "dead_letter"


# -- live traffic: stored webhooks handed over in memory ------------------------------------

async def test_webhooks_arriving_one_at_a_time_are_sent_without_being_read_back(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # a poll far away: only the hand-over (or a read it would need) can send them
    edge = await start_edge(nursery, tmp_path, poll_interval=30)
    async with TestHub.connected(edge.addresses.grpc) as hub:
        await wait_for(lambda: edge.dispatcher.rounds >= 1)  # the connection's first read
        for i in range(5):
            wid = (await post(edge.addresses.ingress, "alpha", f"{i}".encode())).json()["id"]
            with trio.fail_after(2):
                webhook = await hub.recv_webhook()
            assert (webhook.id, webhook.payload) == (wid, f"{i}".encode())
            await hub.ack(wid)
    assert edge.dispatcher.handed_over == 5


async def test_rows_another_process_writes_reach_an_endpoint_whose_traffic_is_handed_over(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, poll_interval=0.1)
    async with TestHub.connected(edge.addresses.grpc) as hub:
        live = (await post(edge.addresses.ingress, "alpha")).json()["id"]
        assert (await hub.recv_webhook()).id == live
        await hub.ack(live)
        assert edge.dispatcher.handed_over == 1  # alpha is caught up: reads skip it...
        other = uuid.uuid4().hex
        with open_db(edge.config.store.path) as db:
            db.execute(
                "INSERT INTO webhooks (id, endpoint_id, method, headers, body, received_at, "
                "status, updated_at) VALUES (?, 'alpha', 'POST', '[]', x'00', ?, 'pending', ?)",
                (other, time.time(), time.time()))
        with trio.fail_after(3):  # ...but not the read every poll_interval
            assert (await hub.recv_webhook()).id == other


async def test_a_replay_on_an_endpoint_whose_traffic_is_handed_over_is_sent_at_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, poll_interval=30)
    async with TestHub.connected(edge.addresses.grpc) as hub:
        original = (await post(edge.addresses.ingress, "alpha", b"again")).json()["id"]
        assert (await hub.recv_webhook()).id == original
        await hub.ack(original)
        await wait_for(lambda: _delivered(edge, original))
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://{edge.addresses.admin}/api/webhooks/{original}/replay")
        copy = response.json()["queued"]["id"]
        with trio.fail_after(2):
            webhook = await hub.recv_webhook()
        assert (webhook.id, webhook.payload) == (copy, b"again")


async def _delivered(edge: Relayd, webhook_id: str) -> bool:
    return await stored_status(edge, webhook_id) == "delivered"
