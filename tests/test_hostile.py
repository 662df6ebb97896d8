"""Hostile input on the gRPC port: relayd answers it, contains it, and keeps serving a hub."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import anyio
import h2.config
import h2.connection
import h2.events
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayd.edge.daemon import Relayd
from relayd.wire import pb
from tests.conftest import start_edge
from tests.db import open_db
from tests.helpers import TestHub, connect_request, post, wait_for

UNAUTHENTICATED, INVALID_ARGUMENT = 16, 3
# what a client sees when the edge resets its connection under it
RESET = (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.BrokenResourceError)


async def send_raw(edge: Relayd, data: bytes, *, local_host: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a fresh TCP connection; return all the edge sent until it closed."""
    sock = trio.socket.socket()
    await sock.bind((local_host, 0))
    await sock.connect((edge.addresses.grpc.host, edge.addresses.grpc.port))
    stream = trio.SocketStream(sock)
    received = b""
    async with stream:
        try:
            await stream.send_all(data)
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        except (trio.BrokenResourceError, ConnectionResetError):
            pass
    return received


async def assert_still_serving(edge: Relayd, hub: TestHub) -> None:
    """The connected hub still gets webhooks and its acks land."""
    wid = (await post(edge.addresses.ingress, "alpha", os.urandom(16))).json()["id"]
    webhook = await hub.recv_webhook()
    assert webhook.id == wid
    await hub.ack(wid)
    await wait_for(lambda: edge.manager.statistics().in_flight == 0)


@pytest.mark.parametrize(
    "payload",
    [
        os.urandom(4096),
        b"POST /h/alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(2048),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x04\x00\x00\x00\x00\x00" * 3,
    ],
    ids=["random-bytes", "http1-request", "preface-then-garbage", "preface-then-bad-settings"],
)
async def test_garbage_is_dropped_and_the_connected_hub_is_untouched(
    edge: Relayd, payload: bytes
) -> None:
    async with TestHub.connected(edge.addresses.grpc) as hub:
        conn = edge.manager.current
        await send_raw(edge, payload)  # returns once the edge closed the connection
        await wait_for(lambda: len(edge.grpc_server.connections) == 1)
        assert edge.manager.current is conn
        await assert_still_serving(edge, hub)


async def h2_request(edge: Relayd, path: str, content_type: str) -> str | None:
    """One plain HTTP/2 request (h2 library, no gRPC stack); the grpc-status answered."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", path),
                          (":authority", "relay"), ("content-type", content_type),
                          ("te", "trailers")])
    conn.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
    status = None
    sock = await trio.open_tcp_stream(edge.addresses.grpc.host, edge.addresses.grpc.port)
    async with sock:
        await sock.send_all(conn.data_to_send())
        with trio.move_on_after(2):
            while chunk := await _receive(sock):
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        status = dict(event.headers).get("grpc-status", status)
                    if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        return status
                await sock.send_all(conn.data_to_send())
    return status


async def _receive(sock: trio.SocketStream) -> bytes:
    try:
        return await sock.receive_some(65536)
    except trio.BrokenResourceError:  # reset by the edge
        return b""


async def test_valid_http2_on_a_wrong_path_is_unimplemented(edge: Relayd) -> None:
    assert await h2_request(edge, "/relay.v1.Other/Stream", "application/grpc") == "12"


async def test_wrong_content_type_is_refused_and_edge_keeps_serving(edge: Relayd) -> None:
    async with TestHub.connected(edge.addresses.grpc) as hub:
        status = await h2_request(edge, "/relay.v1.RelayService/Stream", "text/plain")
        assert status is None  # not gRPC: the connection is dropped, nothing is answered
        await assert_still_serving(edge, hub)


async def test_malformed_protobuf_first_message_is_unauthenticated(edge: Relayd) -> None:
    async with TestHub.open(edge.addresses.grpc) as hub:
        await hub.stream.send_messages([b"\xff\xff\xff\xff"])  # not a StreamRequest
        message = await hub.recv()
        assert message is not None
        assert message.connect_response.error == "malformed ConnectRequest"
        assert await hub.wait_end() == UNAUTHENTICATED


async def test_malformed_protobuf_after_connect_ends_the_stream_invalid_argument(
    edge: Relayd,
) -> None:
    async with TestHub.connected(edge.addresses.grpc) as hub:
        await hub.stream.send_messages([b"\x0a\xff\xff\xff\xff\x0f"])  # truncated field
        assert await hub.wait_end() == INVALID_ARGUMENT
    await wait_for(lambda: not edge.manager.is_connected())


async def test_message_over_the_size_limit_closes_that_connection_only(edge: Relayd) -> None:
    async with TestHub.connected(edge.addresses.grpc) as good:
        status: list[int | None] = []
        try:
            async with TestHub.open(edge.addresses.grpc) as big:
                with trio.move_on_after(3):  # the edge stops reading: the send may not end
                    await big.stream.send_messages([b"\x00" * (2 * 1024 * 1024)])
                with trio.fail_after(5):
                    status.append(await big.wait_end())
        except* RESET:
            status.append(None)  # reset by the edge while this client was still writing
        assert status[-1] is None  # connection dropped, no status
        await wait_for(lambda: len(edge.grpc_server.connections) == 1)
        await assert_still_serving(edge, good)


async def test_flood_of_bad_connects_is_refused_and_logged_once(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    edge = await start_edge(nursery, tmp_path)
    async with TestHub.connected(edge.addresses.grpc) as good:
        answered, now = 0, int(time.time())
        with trio.fail_after(10):
            for _ in range(1000):
                try:
                    async with TestHub.open(edge.addresses.grpc, "127.0.0.9") as bad:
                        with contextlib.suppress(*RESET):
                            await bad.send(connect_request(secret=b"guess", timestamp=now))
                        # refused at accept: closed without an answer
                        answered += await bad.recv() is not None
                except* RESET:
                    pass  # refused: reset while the client was still writing
        refused = 1000 - answered
        assert answered == edge.config.relay.max_failures_per_peer
        assert refused == 970
        failures = [r for r in caplog.records if "hub authentication failed" in r.message]
        refusals = [r for r in caplog.records if "grpc connection refused" in r.message]
        assert len(failures) == 1 and len(refusals) == 1
        assert "127.0.0.9" in refusals[0].message
        # the connected hub is untouched, and another address can still connect
        await assert_still_serving(edge, good)
    async with TestHub.connected(edge.addresses.grpc, "127.0.0.1"):
        pass
    # the summary line at the end of the interval: tests/test_guard.py


async def test_idle_connections_are_bounded_per_peer_and_in_total(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, max_connections_per_peer=3, max_connections=5)
    idle: list[trio.SocketStream] = []
    try:
        for host in ["127.0.0.2"] * 6 + ["127.0.0.3"] * 6:
            sock = trio.socket.socket()
            await sock.bind((host, 0))
            await sock.connect((edge.addresses.grpc.host, edge.addresses.grpc.port))
            idle.append(trio.SocketStream(sock))
        await wait_for(lambda: len(edge.grpc_server.connections) == 5)
        hosts = sorted(c.host for c in edge.grpc_server.connections)
        assert hosts == ["127.0.0.2"] * 3 + ["127.0.0.3"] * 2
    finally:
        for stream in idle:
            await stream.aclose()
    await wait_for(lambda: not edge.grpc_server.connections)
    async with TestHub.connected(edge.addresses.grpc):
        pass


_requests = st.one_of(
    st.builds(lambda ts: connect_request(timestamp=ts), st.integers(0, 2**40)),
    st.builds(lambda: connect_request()),
    st.builds(lambda wid, ok, code, err, perm: pb.StreamRequest(ack=pb.DeliveryAck(
        webhook_id=wid, success=ok, status_code=code, error_message=err,
        permanent_failure=perm)),
        st.sampled_from(["", "x", "w-unknown"]) | st.text(max_size=40), st.booleans(),
        st.integers(-(2**31), 2**31 - 1), st.text(max_size=100), st.booleans()),
    st.builds(lambda ts: pb.StreamRequest(heartbeat=pb.Heartbeat(timestamp=ts)),
              st.integers(-(2**63), 2**63 - 1)),
    st.builds(pb.StreamRequest),
    st.binary(max_size=64),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(requests=st.lists(_requests, max_size=8))
async def test_any_message_sequence_proceeds_or_ends_with_a_clear_status(
    tmp_path_factory: pytest.TempPathFactory, requests: list[object]
) -> None:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    async with trio.open_nursery() as nursery:
        edge = await start_edge(nursery, tmp_path, max_failures_per_peer=10**6)
        wid = (await post(edge.addresses.ingress, "alpha", b"fuzz")).json()["id"]
        async with TestHub.open(edge.addresses.grpc) as hub:
            for request in requests:
                if isinstance(request, bytes):
                    await hub.stream.send_messages([request])
                else:
                    await hub.send(request)
            await hub.stream.close()  # half-close: the edge must finish the RPC
            with trio.fail_after(5):
                status = await hub.wait_end()
        assert status in (0, UNAUTHENTICATED, INVALID_ARGUMENT)
        # state is consistent and a good hub is served afterwards
        async with TestHub.connected(edge.addresses.grpc) as good:
            webhook = await good.recv_webhook()
            assert webhook.id == wid
        with open_db(edge.config.store.path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("SELECT status FROM webhooks").fetchall() == [("pending",)]
        nursery.cancel_scope.cancel()
