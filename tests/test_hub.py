"""relay-hub against a real edge and a real HTTP destination, in one process."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from relayd.config import Endpoint
from relayd.daemon import Relayd
from relayd.hub.daemon import RelayHub
from tests.destination import Destination
from tests.helpers import ENDPOINTS, make_config, make_hub_config, post, wait_for


@pytest.fixture
async def destination(nursery: trio.Nursery) -> Destination:
    dest = Destination()
    await nursery.start(dest.serve)
    return dest


async def start_hub(nursery: trio.Nursery, edge: Relayd, dest: Destination, **hub: object
                    ) -> RelayHub:
    config = make_hub_config(edge.addresses.grpc, {ep: dest.url(f"/{ep}") for ep in ENDPOINTS},
                             **hub)
    relay_hub = RelayHub(config)
    await nursery.start(relay_hub.run)
    return relay_hub


async def status_of(edge: Relayd, webhook_id: str) -> str:
    row = await edge.store.get(webhook_id)
    assert row is not None
    return str(row["status"])


async def test_hub_delivers_body_and_headers_byte_exact(
    edge: Relayd, destination: Destination, nursery: trio.Nursery
) -> None:
    await start_hub(nursery, edge, destination)
    body = bytes(range(256)) * 4
    headers = [(b"content-type", b"application/octet-stream"),
               (b"x-hub-signature-256", b"sha256=ab"), (b"stripe-signature", b"t=1,v1=cd"),
               (b"x-latin", "caf\u00e9".encode("latin-1"))]
    wid = (await post(edge.addresses.ingress, "alpha", body, headers)).json()["id"]
    await destination.wait_count(lambda d: len(d.received) == 1)
    got = destination.received[0]
    assert got.method == "POST" and got.path == "/alpha" and got.body == body
    assert got.headers["x-hub-signature-256"] == "sha256=ab"
    assert got.headers["stripe-signature"] == "t=1,v1=cd"
    assert (b"x-latin", "caf\u00e9".encode("latin-1")) in got.raw_headers  # bytes as received
    assert got.headers["x-relay-webhook-id"] == wid
    assert got.headers["x-relay-attempt"] == "1"
    assert got.headers["host"] == str(destination.address)  # set for the destination
    await wait_for(lambda: edge.ack_writer.applied == 1)
    assert await status_of(edge, wid) == "delivered"


async def test_hub_uses_the_edge_destination_url_without_an_override(
    nursery: trio.Nursery, tmp_path: Path, destination: Destination
) -> None:
    config = make_config(tmp_path)
    config = replace(config, endpoints=(Endpoint("alpha", destination.url("/from-edge")),))
    edge = Relayd(config)
    await nursery.start(edge.run)
    relay_hub = RelayHub(make_hub_config(edge.addresses.grpc))
    await nursery.start(relay_hub.run)
    await post(edge.addresses.ingress, "alpha", b"x")
    await destination.wait_count(lambda d: len(d.received) == 1)
    assert destination.received[0].path == "/from-edge"


@pytest.mark.parametrize(
    ("answers", "final", "attempts"),
    [([503, 503, 200], "delivered", 3), ([429, 200], "delivered", 2), ([408, 200], "delivered", 2),
     ([404], "failed", 1), ([400], "failed", 1)],
)
async def test_hub_classifies_destination_answers(
    edge: Relayd, destination: Destination, nursery: trio.Nursery,
    answers: list[int], final: str, attempts: int,
) -> None:
    destination.statuses["/alpha"] = list(answers)
    await start_hub(nursery, edge, destination)
    wid = (await post(edge.addresses.ingress, "alpha", b"x")).json()["id"]
    nxt = (await post(edge.addresses.ingress, "alpha", b"next")).json()["id"]
    await destination.wait_count(lambda d: b"next" in d.bodies("/alpha"))
    # the next webhook of the endpoint only arrived after the first was settled
    paths = [r.body for r in destination.received]
    assert paths == [b"x"] * attempts + [b"next"]
    await wait_for(lambda: edge.manager.statistics().in_flight == 0)
    row = await edge.store.get(wid)
    assert row["status"] == final and row["attempts"] == attempts
    if final == "failed":
        assert row["last_status_code"] == answers[0]
    assert await status_of(edge, nxt) in ("delivered", "pending")


async def test_hub_timeout_and_connection_refused_are_transient(
    edge: Relayd, destination: Destination, nursery: trio.Nursery
) -> None:
    destination.delays["/alpha"] = 5
    relay_hub = RelayHub(make_hub_config(
        edge.addresses.grpc, {"alpha": destination.url("/alpha"), "beta": "http://127.0.0.1:9/"},
        delivery_timeout=0.3))
    await nursery.start(relay_hub.run)
    slow = (await post(edge.addresses.ingress, "alpha", b"slow")).json()["id"]
    refused = (await post(edge.addresses.ingress, "beta", b"refused")).json()["id"]

    async def both_retried() -> bool:
        rows = [await edge.store.get(slow), await edge.store.get(refused)]
        return all(r["attempts"] >= 1 for r in rows)

    await wait_for(both_retried)
    slow_row, refused_row = await edge.store.get(slow), await edge.store.get(refused)
    assert slow_row["status"] == "pending" and slow_row["last_error"] == "timeout after 0.3s"
    assert refused_row["status"] == "pending" and "ConnectError" in refused_row["last_error"]


async def test_slow_destination_does_not_block_other_endpoints_or_heartbeats(
    nursery: trio.Nursery, tmp_path: Path, destination: Destination
) -> None:
    from tests.conftest import start_edge

    edge = await start_edge(nursery, tmp_path, heartbeat_interval=0.1, stale_timeout=0.5)
    destination.delays["/alpha"] = 2
    await start_hub(nursery, edge, destination, heartbeat_interval=0.1, stale_timeout=0.5)
    await post(edge.addresses.ingress, "alpha", b"slow")
    fast = [(await post(edge.addresses.ingress, "beta", f"{i}".encode())).json()["id"]
            for i in range(5)]
    conn = edge.manager.current
    await destination.wait_count(lambda d: len(d.bodies("/beta")) == 5, within=1.5)
    assert destination.bodies("/beta") == [b"0", b"1", b"2", b"3", b"4"]
    assert destination.bodies("/alpha") == []  # still being delivered
    # heartbeats kept flowing both ways: neither side declared the other stale
    await destination.wait_count(lambda d: len(d.bodies("/alpha")) == 1, within=5)
    assert edge.manager.current is conn and conn.close_reason == ""
    assert all([await status_of(edge, w) == "delivered" for w in fast])


async def test_rejected_hub_logs_reason_and_backs_off(
    edge: Relayd, destination: Destination, nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    config = make_hub_config(edge.addresses.grpc, secret=b"wrong-secret-xyzzy",
                             reconnect_initial=0.2, reconnect_max=0.4)
    relay_hub = RelayHub(config)
    await nursery.start(relay_hub.run)
    def rejections() -> int:
        return sum("rejected by the edge: invalid signature" in r.message for r in caplog.records)

    await wait_for(lambda: rejections() >= 3)
    before = rejections()
    await trio.sleep(1.0)  # an observation window, not synchronisation: count attempts in it
    # with a 0.2-0.4 s backoff one second holds a handful of attempts, not a hot loop
    assert rejections() - before <= 12
    assert relay_hub.connections == 0
    assert "xyzzy" not in caplog.text


async def test_hub_goes_stale_and_reconnects_when_the_edge_is_silent(
    nursery: trio.Nursery, tmp_path: Path, destination: Destination,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import start_edge

    caplog.set_level(logging.INFO)
    # the edge sends heartbeats every 5 s; the hub expects something every 0.4 s
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=5, stale_timeout=10)
    relay_hub = await start_hub(nursery, edge, destination, heartbeat_interval=0.1,
                                stale_timeout=0.4)
    await wait_for(lambda: relay_hub.connections >= 2, within=5)
    assert "stale: no message from the edge" in caplog.text
    wid = (await post(edge.addresses.ingress, "alpha", b"after")).json()["id"]
    await destination.wait_count(lambda d: b"after" in d.bodies("/alpha"))
    assert wid
