"""relay-hub against a real edge and a real HTTP destination, in one process."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from relayd.common.tomlconfig import ListenAddress
from relayd.edge.config import Endpoint
from relayd.edge.daemon import Relayd
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
    # a success frees its slot on arrival and is written after: wait for the row to settle
    async def settled() -> bool:
        return await status_of(edge, wid) != "pending"
    await wait_for(settled)
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
    await destination.wait_count(lambda d: len(d.bodies("/beta")) == 5)
    assert destination.bodies("/beta") == [b"0", b"1", b"2", b"3", b"4"]
    assert destination.bodies("/alpha") == []  # still being delivered: beta did not wait
    # heartbeats kept flowing both ways over the wire for those 2 s: neither side
    # declared the other stale
    await destination.wait_count(lambda d: len(d.bodies("/alpha")) == 1)
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
    # the edge sends heartbeats every 5 s; the hub expects something every 0.4 s (when
    # exactly it gives up: test_hub_session_ends_exactly_stale_timeout_after_the_edge_went_silent)
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=5, stale_timeout=10)
    relay_hub = await start_hub(nursery, edge, destination, heartbeat_interval=0.1,
                                stale_timeout=0.4)
    await wait_for(lambda: relay_hub.connections >= 2)
    assert "stale: no message from the edge" in caplog.text
    wid = (await post(edge.addresses.ingress, "alpha", b"after")).json()["id"]
    await destination.wait_count(lambda d: b"after" in d.bodies("/alpha"))
    assert wid


class _FakeEdgeStream:
    """The hub's side of a stream, fed by the test: envelopes in, acks out."""

    def __init__(self) -> None:
        self.to_hub_send, self._to_hub = trio.open_memory_channel(100)
        self.acks: list[object] = []
        self.sent: list[tuple[float, str]] = []  # (when, kind) of every message
        self.got_ack = trio.Event()
        self.end_stream_event = None

    async def receive_messages(self, max_items: int) -> tuple[list[object], bool]:
        """Like BatchStream's: wait for one, then take all already queued."""
        try:
            messages = [await self._to_hub.receive()]
        except trio.EndOfChannel:
            return [], True
        while len(messages) < max_items:
            try:
                messages.append(self._to_hub.receive_nowait())
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                return messages, True
        return messages, False

    async def send_messages(self, messages: list[object]) -> None:
        for message in messages:
            kind = message.WhichOneof("message")  # type: ignore[attr-defined]
            self.sent.append((trio.current_time(), kind))
            if kind == "ack":
                self.acks.append(message.ack)  # type: ignore[attr-defined]
                self.got_ack.set()
                self.got_ack = trio.Event()

    async def close(self) -> None:
        pass


async def test_duplicate_after_reconnect_is_re_acked_without_delivering_again(
    destination: Destination,
) -> None:
    from relayd.hub.client import DeliveryClient
    from relayd.hub.recent import RecentIds
    from relayd.hub.session import HubSession
    from relayd.wire import pb

    config = make_hub_config(ListenAddress("127.0.0.1", 1), {"alpha": destination.url("/a")})
    recent = RecentIds(10)
    envelope = pb.WebhookEnvelope(id="w1", endpoint_id="alpha", payload=b"once", attempt=1)
    with DeliveryClient(max_idle=4) as client:
        for attempt in (1, 2):  # the same envelope on two connections
            stream = _FakeEdgeStream()
            session = HubSession(stream, config.hub, config.destinations, client, recent,
                                 trio.CapacityLimiter(4))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run, trio.Event())
                await stream.to_hub_send.send(pb.StreamResponse(webhook=envelope))
                with trio.fail_after(5):
                    await stream.got_ack.wait()
                nursery.cancel_scope.cancel()
            [ack] = stream.acks
            assert ack.webhook_id == "w1" and ack.success
            if attempt == 2:
                assert ack.error_message == "duplicate: already delivered"
    assert destination.bodies("/a") == [b"once"]


async def test_envelopes_received_together_are_each_delivered_in_order(
    destination: Destination,
) -> None:
    from relayd.hub.client import DeliveryClient
    from relayd.hub.recent import RecentIds
    from relayd.hub.session import HubSession
    from relayd.wire import pb

    config = make_hub_config(ListenAddress("127.0.0.1", 1), {"alpha": destination.url("/a")})
    stream = _FakeEdgeStream()
    for n in range(5):  # queued before the session reads: one batch
        await stream.to_hub_send.send(pb.StreamResponse(webhook=pb.WebhookEnvelope(
            id=f"w{n}", endpoint_id="alpha", payload=b"%d" % n, attempt=1)))
    with DeliveryClient(max_idle=4) as client:
        session = HubSession(stream, config.hub, config.destinations, client, RecentIds(10),
                             trio.CapacityLimiter(4))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run, trio.Event())
            with trio.fail_after(5):
                while len(stream.acks) < 5:
                    await stream.got_ack.wait()
            nursery.cancel_scope.cancel()
    assert [a.webhook_id for a in stream.acks] == ["w0", "w1", "w2", "w3", "w4"]  # type: ignore[attr-defined]
    assert destination.bodies("/a") == [b"0", b"1", b"2", b"3", b"4"]


async def test_hub_session_ends_exactly_stale_timeout_after_the_edge_went_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from relayd.hub.client import DeliveryClient
    from relayd.hub.recent import RecentIds
    from relayd.hub.session import HubSession
    from relayd.wire import pb

    config = make_hub_config(ListenAddress("127.0.0.1", 1), heartbeat_interval=30,
                             stale_timeout=60)
    stream = _FakeEdgeStream()
    with DeliveryClient(max_idle=4) as client:
        session = HubSession(stream, config.hub, {}, client, RecentIds(10),
                             trio.CapacityLimiter(1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run, trio.Event())
            for t in (20.0, 40.0, 43.0):  # the edge's last messages, 3 s apart at the end
                await trio.sleep_until(t)
                await stream.to_hub_send.send(pb.StreamResponse(heartbeat=pb.Heartbeat()))
    assert trio.current_time() == 103.0
    assert session.end_reason == "stale: no message from the edge within the stale timeout"
    assert stream.sent == [(30.0, "heartbeat"), (60.0, "heartbeat"), (90.0, "heartbeat")]


async def test_recent_ids_are_bounded() -> None:
    from relayd.hub.recent import RecentIds

    recent = RecentIds(3)
    for i in range(5):
        recent.add(f"w{i}")
    assert len(recent) == 3 and "w0" not in recent and "w4" in recent


async def test_hub_stop_finishes_delivery_in_progress_and_acks_it(
    edge: Relayd, destination: Destination, nursery: trio.Nursery
) -> None:
    destination.delays["/alpha"] = 0.5
    relay_hub = await start_hub(nursery, edge, destination)
    wid = (await post(edge.addresses.ingress, "alpha", b"in progress")).json()["id"]
    await wait_for(lambda: relay_hub.session is not None
                   and relay_hub.session.in_progress.value == 1)
    relay_hub.request_shutdown()
    with trio.fail_after(5):
        await relay_hub.stopped.wait()
    assert destination.bodies("/alpha") == [b"in progress"]
    await wait_for(lambda: edge.ack_writer.applied == 1)
    assert await status_of(edge, wid) == "delivered"
    await wait_for(lambda: not edge.manager.is_connected())
    assert edge.manager.statistics().connected is False


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert_file, key_file, ca_file


async def test_hub_connects_to_a_tls_edge_with_a_private_ca(
    nursery: trio.Nursery, tmp_path: Path, destination: Destination
) -> None:
    from tests.conftest import start_edge

    cert_file, key_file, ca_file = _tls_files(tmp_path)
    edge = await start_edge(nursery, tmp_path, tls_cert=str(cert_file), tls_key=str(key_file))
    relay_hub = RelayHub(make_hub_config(edge.addresses.grpc, {"alpha": destination.url("/t")},
                                         scheme="https", ca_file=str(ca_file)))
    await nursery.start(relay_hub.run)
    await post(edge.addresses.ingress, "alpha", b"over tls")
    await destination.wait_count(lambda d: d.bodies("/t") == [b"over tls"])
    assert relay_hub.connections == 1


async def test_hub_refuses_a_tls_edge_it_cannot_verify(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import start_edge

    caplog.set_level(logging.INFO)
    cert_file, key_file, _ = _tls_files(tmp_path)
    edge = await start_edge(nursery, tmp_path, tls_cert=str(cert_file), tls_key=str(key_file))
    relay_hub = RelayHub(make_hub_config(edge.addresses.grpc, scheme="https"))  # system CAs
    await nursery.start(relay_hub.run)
    await wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text)
    assert relay_hub.connections == 0 and not edge.manager.is_connected()


async def test_grpcio_client_connects_to_tls_edge_with_alpn_h2(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """An independent gRPC stack (grpcio, C-core) authenticates over TLS."""
    import grpc

    from relayd.wire import pb
    from tests.conftest import start_edge
    from tests.helpers import connect_request

    cert_file, key_file, ca_file = _tls_files(tmp_path)
    edge = await start_edge(nursery, tmp_path, tls_cert=str(cert_file), tls_key=str(key_file))

    def connect() -> pb.StreamResponse:
        credentials = grpc.ssl_channel_credentials(ca_file.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{edge.addresses.grpc.port}", credentials) as ch:
            call = ch.stream_stream("/relay.v1.RelayService/Stream",
                                    request_serializer=pb.StreamRequest.SerializeToString,
                                    response_deserializer=pb.StreamResponse.FromString)
            responses = call(iter([connect_request()]), timeout=10)
            first = next(responses)
            responses.cancel()
            return first

    first = await trio.to_thread.run_sync(connect)
    assert first.connect_response.success
