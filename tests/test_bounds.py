"""What the public can make relayd store: pending webhooks per endpoint, database size.

(The free-space floor on a real small file system: tests/test_bounds_disk.py.)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import httpx
import pytest
import trio

from relayd.edge.config import ConfigError, Endpoint, load_config, parse_config
from relayd.edge.daemon import Relayd
from relayd.edge.store import AckRecord, NewWebhook, Store
from tests.helpers import TestHub, make_config, post, wait_for

ENV = {"RELAYD_HUB_SECRET": "from-env"}
KIB = 1024


def webhooks(endpoint_id: str, count: int, at: float) -> list[NewWebhook]:
    return [NewWebhook(f"{endpoint_id}-{i}", endpoint_id, "POST", [], b"x", at)
            for i in range(count)]


def delivered(webhook_id: str) -> AckRecord:
    return AckRecord(webhook_id, True, 200, "", False)


# -- the pending count per endpoint ------------------------------------------------------


async def test_the_store_counts_pending_webhooks_per_endpoint_through_every_write(
        tmp_path: Path) -> None:
    now = time.time()
    async with Store.open(tmp_path / "relayd.db") as store:
        await store.insert_webhooks(webhooks("a", 4, now - 10) + webhooks("b", 2, now))
        assert (store.pending_count("a"), store.pending_count("b")) == (4, 2)
        outcomes = await store.apply_acks([
            delivered("a-0"),
            AckRecord("a-1", False, 500, "boom", False),  # retry: still pending
            AckRecord("a-2", False, 400, "bad", True),  # failed
            delivered("a-0"),  # already delivered: ignored
            delivered("nope"),  # unknown: ignored
        ], now)
        assert [o.outcome for o in outcomes] == ["delivered", "retry", "failed", "ignored",
                                                 "ignored"]
        assert store.pending_count("a") == 2
        # expiry past the maximum age turns pending ones into dead letters
        assert await store.expire_pending(now + store.retry.max_age - 5) == ["a-1", "a-3"]
        assert (store.pending_count("a"), store.pending_count("b"), store.pending_count("c")) \
            == (0, 2, 0)
    # a store opened on the database starts from what it holds
    async with Store.open(tmp_path / "relayd.db") as store:
        assert (store.pending_count("a"), store.pending_count("b")) == (0, 2)


# -- max_pending -------------------------------------------------------------------------


def config_with_max_pending(tmp_path: Path, max_pending: int) -> Relayd:
    config = make_config(tmp_path)
    endpoints = tuple(dataclasses.replace(ep, max_pending=max_pending) if ep.id == "alpha"
                      else ep for ep in config.endpoints)
    return Relayd(dataclasses.replace(config, endpoints=endpoints))


async def test_an_endpoint_at_max_pending_gets_503_then_202_again_after_a_delivery(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    edge = config_with_max_pending(tmp_path, 3)
    await nursery.start(edge.run)
    assert edge.store is not None and edge.addresses is not None
    address = edge.addresses.ingress
    ids = [(await post(address, "alpha", b"%d" % i)).json()["id"] for i in range(3)]
    refused = await post(address, "alpha", b"over")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"
    assert refused.json() == {"error": "too many webhooks pending for this endpoint, retry later"}
    assert (await post(address, "alpha", b"over")).status_code == 503
    # other endpoints are not held back, and status answers
    assert (await post(address, "beta")).status_code == 202
    async with httpx.AsyncClient() as client:
        status = (await client.get(f"http://{edge.addresses.admin}/api/status")).json()
    assert status["queue"]["pending"] == 4
    # one delivery makes room for one more
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        envelope = await hub.recv_webhook()
        assert envelope.id == ids[0]
        await hub.ack(envelope.id)
        await wait_for(lambda: edge.store.pending_count("alpha") == 2)
    assert (await post(address, "alpha", b"again")).status_code == 202
    assert (await post(address, "alpha", b"over")).status_code == 503
    assert (await edge.store.counts())["pending"] == 4  # 3 alpha, 1 beta: nothing else stored
    lines = [r.getMessage() for r in caplog.records if "max_pending" in r.getMessage()]
    assert len(lines) == 3  # refusing, taking again, refusing: not a line per request
    assert lines[0].startswith("endpoint at max_pending") and "endpoint=alpha" in lines[0]
    assert lines[1].startswith("endpoint below max_pending again")


async def test_max_pending_counts_what_the_database_held_at_start(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    async with Store.open(tmp_path / "relayd.db") as store:
        await store.insert_webhooks(webhooks("alpha", 3, time.time()))
    edge = config_with_max_pending(tmp_path, 3)
    await nursery.start(edge.run)
    assert edge.addresses is not None
    assert (await post(edge.addresses.ingress, "alpha")).status_code == 503


# -- store.max_bytes -------------------------------------------------------------------


async def test_a_database_over_max_bytes_refuses_webhooks_until_retention_frees_pages(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    # keep_delivered: retention may delete a delivered webhook at once (run_round below)
    edge = Relayd(make_config(tmp_path, store={"max_bytes": 256 * KIB, "min_free_bytes": 0,
                                               "keep_delivered": 0.001}))
    await nursery.start(edge.run)
    assert edge.store is not None and edge.addresses is not None
    assert edge.capacity is not None and edge.retention is not None
    address, capacity = edge.addresses.ingress, edge.capacity
    schema_bytes = (await edge.store.space()).size_bytes  # the empty tables and indexes
    body = b"b" * 16 * KIB
    accepted: list[str] = []

    async def post_until_refused() -> httpx.Response:
        """Four at a time, each time the sampler has looked again: it is seen at once."""
        with trio.fail_after(30):
            while True:
                seen = capacity.samples.value
                for _ in range(4):
                    answer = await post(address, "alpha", body)
                    if answer.status_code != 202:
                        return answer
                    accepted.append(answer.json()["id"])
                await capacity.samples.wait_value(lambda n, seen=seen: n > seen)

    refused = await post_until_refused()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
    assert refused.json() == {"error": "relay storage is full, retry later"}
    stats = capacity.statistics()
    assert stats.full and stats.used_bytes is not None and stats.used_bytes > 256 * KIB
    # the rest holds the rows (and their index entries)
    assert len(accepted) >= (256 * KIB - schema_bytes) // (16 * KIB) - 1
    # acks still land while full
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        for _ in accepted:
            await hub.ack((await hub.recv_webhook()).id)
        await wait_for(lambda: edge.store.pending_count("alpha") == 0)
    assert (await edge.store.counts())["delivered"] == len(accepted)
    # retention deletes them: their pages are free for new rows, and webhooks come in
    report = await edge.retention.run_round()
    assert report.deleted["delivered"] == len(accepted)
    seen = capacity.samples.value
    await capacity.samples.wait_value(lambda n: n > seen)
    assert not capacity.statistics().full
    assert (await post(address, "alpha", body)).status_code == 202


# -- configuration ---------------------------------------------------------------------


def test_store_bound_defaults(tmp_path: Path) -> None:
    path = tmp_path / "relayd.toml"
    path.write_text('[[endpoints]]\nid = "a"\ndestination_url = "http://h/a"\n')
    config = load_config(path, environ=ENV)
    assert (config.store.min_free_bytes, config.store.max_bytes) == (256 * KIB * KIB, None)
    assert config.endpoints == (Endpoint("a", "http://h/a", max_pending=100_000),)


def test_store_bounds_are_read(tmp_path: Path) -> None:
    raw = {"store": {"min_free_bytes": 0, "max_bytes": 10 * KIB},
           "endpoints": [{"id": "a", "destination_url": "http://h/a", "max_pending": 5}]}
    config = parse_config(raw, environ=ENV)
    assert (config.store.min_free_bytes, config.store.max_bytes) == (0, 10 * KIB)
    assert config.endpoints[0].max_pending == 5


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[store]\nmin_free_bytes = -1",
         r"store.min_free_bytes: must be an integer >= 0 \(0: off\), got -1"),
        ("[store]\nmin_free_bytes = 1.5", "store.min_free_bytes: must be an integer >= 0"),
        ("[store]\nmax_bytes = 0", "store.max_bytes: must be a positive integer"),
        ('[[endpoints]]\nid = "a"\ndestination_url = "http://h/a"\nmax_pending = 0',
         r"endpoints\[0\].max_pending: must be a positive integer, got 0"),
        ('[[endpoints]]\nid = "a"\ndestination_url = "http://h/a"\nmax_pending = "many"',
         r"endpoints\[0\].max_pending: must be a positive integer"),
    ],
)
def test_bad_store_bounds_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "relayd.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=ENV)
