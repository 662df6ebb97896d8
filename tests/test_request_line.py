"""The webhook arrives as the provider sent it: method, sub-path, query and sender address.

The edge keeps what followed ``/h/{endpoint_id}`` and the query byte for byte; the hub
sends the same method to the destination URL extended by them, byte for byte.
Destinations here record the raw request line (`RawDestination`, h11, no ASGI).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import trio

from relayd.edge.daemon import Relayd
from relayd.edge.store import schema
from relayd.hub.client import DeliveryClient
from relayd.hub.daemon import RelayHub
from relayd.hub.delivery import deliver
from relayd.wire import pb
from tests.conftest import start_edge
from tests.db import open_db
from tests.destination import RawDestination
from tests.helpers import ENDPOINTS, TestHub, make_hub_config, wait_for


@pytest.fixture
async def raw_destination(nursery: trio.Nursery) -> RawDestination:
    dest = RawDestination()
    await nursery.start(dest.serve)
    return dest


async def send(edge: Relayd, method: str, target: bytes, body: bytes = b"{}",
               headers: dict[str, str] | None = None, *, http2: bool = False) -> httpx.Response:
    """``method target`` to the ingress, the target exactly as given (httpx would normalise)."""
    async with httpx.AsyncClient(http1=not http2, http2=http2) as client:
        return await client.request(method, f"http://{edge.addresses.ingress}/", content=body,
                                    headers=headers or {}, extensions={"target": target})


async def start_hub(nursery: trio.Nursery, edge: Relayd, dest: RawDestination,
                    **hub: object) -> RelayHub:
    relay_hub = RelayHub(make_hub_config(
        edge.addresses.grpc, {ep: dest.url(f"/{ep}") for ep in ENDPOINTS}, **hub))
    await nursery.start(relay_hub.run)
    return relay_hub


# -- the edge ------------------------------------------------------------------------------


async def test_method_sub_path_query_and_sender_are_stored_and_sent_as_received(
        edge: Relayd) -> None:
    put = await send(edge, "PUT", b"/h/alpha/a%2Fb/c%20d+e|f/?x=1%202&y&z=a+b%2F", b"one")
    encoded_id = await send(edge, "PATCH", b"/h/%61lpha/x", b"two")  # id decoded, as before
    plain = await send(edge, "POST", b"/h/alpha", b"three")
    assert [r.status_code for r in (put, encoded_id, plain)] == [202, 202, 202]
    row = await edge.store.get(put.json()["id"])
    assert row is not None
    assert (row["method"], row["path"], row["query"], row["remote_addr"]) == \
        ("PUT", "/a%2Fb/c%20d+e|f/", "x=1%202&y&z=a+b%2F", "127.0.0.1")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        got = []
        for _ in range(3):  # one endpoint: one in flight at a time
            got.append(await hub.recv_webhook())
            await hub.ack(got[-1].id)
    assert [(w.method, w.path, w.query, w.remote_addr, w.payload) for w in got] == [
        ("PUT", "/a%2Fb/c%20d+e|f/", "x=1%202&y&z=a+b%2F", "127.0.0.1", b"one"),
        ("PATCH", "/x", "", "127.0.0.1", b"two"),
        ("POST", "", "", "127.0.0.1", b"three"),
    ]


async def test_a_dot_segment_in_the_sub_path_is_400_and_nothing_is_stored(edge: Relayd) -> None:
    # the destination would resolve them against its own path: /hook/../admin is /admin
    for target in (b"/h/alpha/..", b"/h/alpha/a/../b", b"/h/alpha/./b", b"/h/alpha/%2e%2E/b",
                   b"/h/alpha/a%2F..%2Fb", b"/h/alpha/a%5C..%5Cb", b"/h/alpha/.?x=1"):
        response = await send(edge, "POST", target)
        assert response.status_code == 400, target
        assert response.json() == {"error": "path has a '.' or '..' segment"}
    assert (await edge.store.counts())["pending"] == 0
    ok = await send(edge, "POST", b"/h/alpha/..a/.b/a..b/...?x=/../")  # dots, not segments
    assert ok.status_code == 202
    row = await edge.store.get(ok.json()["id"])
    assert row is not None and (row["path"], row["query"]) == ("/..a/.b/a..b/...", "x=/../")


async def test_query_bytes_outside_ascii_are_kept_exactly_and_percent_encoded_on_the_wire(
        edge: Relayd) -> None:
    # HTTP/1.1 (h11) refuses such a request line; an HTTP/2 :path may carry any byte
    raw_query = b"q=\xff\xfe%20 a&caf\xc3\xa9"
    response = await send(edge, "POST", b"/h/alpha/x?" + raw_query, http2=True)
    assert response.http_version == "HTTP/2" and response.status_code == 202
    row = await edge.store.get(response.json()["id"])
    assert row is not None and str(row["query"]).encode("latin-1") == raw_query
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
    # decodes to the same bytes; "%20" as received stays, the raw space becomes %20
    assert webhook.query == "q=%FF%FE%20%20a&caf%C3%A9"


# -- the hub -------------------------------------------------------------------------------


async def test_delivery_sends_the_method_and_target_byte_exact(
        raw_destination: RawDestination) -> None:
    envelope = pb.WebhookEnvelope(
        id="w1", attempt=1, method="PUT", payload=b"\x00body\xff",
        path="/a%2Fb/c%20d+e|f%7e", query="x=1%202&y&z=a+b%2F&", remote_addr="127.0.0.1",
        headers={"x-sig": "t=1, v1=ab", "x-latin": "caf\u00e9"})
    with DeliveryClient(max_idle=1) as client:
        result = await deliver(client, raw_destination.url("/hook/"), envelope, 5)
    assert result.success
    (got,) = raw_destination.received
    assert (got.method, got.target, got.body) == \
        (b"PUT", b"/hook/a%2Fb/c%20d+e|f%7e?x=1%202&y&z=a+b%2F&", b"\x00body\xff")
    # the webhook's headers, the relay's, and the framing of this hop: nothing else
    # (no Accept, Accept-Encoding or User-Agent of a client's own)
    assert sorted(got.headers) == sorted([
        (b"Host", str(raw_destination.address).encode()), (b"Connection", b"keep-alive"),
        (b"Content-Length", b"6"), (b"x-sig", b"t=1, v1=ab"), (b"x-latin", b"caf\xe9"),
        (b"x-relay-webhook-id", b"w1"), (b"x-relay-attempt", b"1")])


async def test_envelope_from_an_older_edge_is_posted_to_the_destination_as_configured(
        raw_destination: RawDestination) -> None:
    # no method, path, query or remote_addr: what relayd sent before these fields
    envelope = pb.WebhookEnvelope(id="w1", attempt=1, payload=b"old",
                                  headers={"x-forwarded-for": "203.0.113.9"})
    with DeliveryClient(max_idle=1) as client:
        for destination in ("/hook/", "/hook?key=1"):
            result = await deliver(client, raw_destination.url(destination), envelope, 5,
                                   add_forwarded_for=True)
            assert result.success
    assert [(r.method, r.target, r.body) for r in raw_destination.received] == \
        [(b"POST", b"/hook/", b"old"), (b"POST", b"/hook?key=1", b"old")]
    assert all(dict(r.headers)[b"x-forwarded-for"] == b"203.0.113.9"
               for r in raw_destination.received)


async def test_hub_with_add_forwarded_for_appends_the_sender_to_x_forwarded_for(
        edge: Relayd, raw_destination: RawDestination, nursery: trio.Nursery) -> None:
    # (off, the default, is pinned by test_e2e's request-line test and test_hub_config)
    await start_hub(nursery, edge, raw_destination, add_forwarded_for=True)
    await send(edge, "POST", b"/h/alpha", b"proxied", {"x-forwarded-for": "203.0.113.9"})
    await send(edge, "POST", b"/h/beta", b"direct")
    await raw_destination.wait_count(2)
    forwarded = {r.body: dict(r.headers).get(b"x-forwarded-for")
                 for r in raw_destination.received}
    assert forwarded == {b"proxied": b"203.0.113.9, 127.0.0.1", b"direct": b"127.0.0.1"}


# -- the store -----------------------------------------------------------------------------

# The schema as relayd with SCHEMA_VERSION = 2 left it (relayd/edge/store/schema.py then).
V2_SCHEMA = """
CREATE TABLE webhooks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint_id TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead_letter')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    last_status_code INTEGER,
    delivered_at REAL,
    updated_at REAL NOT NULL,
    envelope_head BLOB
);
CREATE INDEX webhooks_pending_by_endpoint ON webhooks (endpoint_id, seq)
    WHERE status = 'pending';
CREATE INDEX webhooks_by_status ON webhooks (status, received_at);
PRAGMA user_version = 2;
"""


def write_v2_database(path: Path, rows: list[tuple[str, str, str, bytes]]) -> None:
    """A database as relayd at schema 2 wrote it: ``(id, status, method, body)`` rows of
    endpoint alpha, each with the envelope head relayd then stored (no request line)."""
    now = time.time()
    with open_db(path) as db:
        db.executescript(V2_SCHEMA)
        for webhook_id, status, method, body in rows:
            headers = [["content-type", "text/plain"]]
            head = pb.WebhookEnvelope(id=webhook_id, endpoint_id="alpha",
                                      headers=dict(headers))
            head.received_at.FromNanoseconds(round(now * 1e9))
            db.execute(
                "INSERT INTO webhooks (id, endpoint_id, method, headers, body, received_at, "
                "status, updated_at, envelope_head) VALUES (?, 'alpha', ?, ?, ?, ?, ?, ?, ?)",
                (webhook_id, method, json.dumps(headers), body, now, status, now,
                 head.SerializeToString()))


async def test_v2_database_is_migrated_and_its_pending_rows_delivered_as_before(
        nursery: trio.Nursery, tmp_path: Path, raw_destination: RawDestination) -> None:
    write_v2_database(tmp_path / "relayd.db", [
        ("done", "delivered", "POST", b"already delivered"),
        ("v2-post", "pending", "POST", b"posted before the upgrade"),
        ("v2-put", "pending", "PUT", b"put before the upgrade"),
    ])
    edge = await start_edge(nursery, tmp_path)
    with open_db(tmp_path / "relayd.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert db.execute("SELECT id, path, query, remote_addr FROM webhooks ORDER BY seq"
                          ).fetchall() == [("done", "", "", ""), ("v2-post", "", "", ""),
                                           ("v2-put", "", "", "")]
    await start_hub(nursery, edge, raw_destination)
    await raw_destination.wait_count(2)
    # no path or query: the destination as configured; the stored method (a v2 hub sent
    # a PUT as a POST; the PUT now goes as what it was)
    assert [(r.method, r.target, r.body) for r in raw_destination.received] == [
        (b"POST", b"/alpha", b"posted before the upgrade"),
        (b"PUT", b"/alpha", b"put before the upgrade"),
    ]

    async def all_delivered() -> bool:
        return (await edge.store.counts())["delivered"] == 3

    await wait_for(all_delivered)
