"""Replacement and staleness per gRPC stream, not per TCP connection.

A gRPC channel multiplexes its calls over one TCP connection: a hub that gives up on its
stream and opens the next one on the same channel sends it over the same socket. Ending
the old stream must not end that socket. Checked with grpcio (C-core), the gRPC stack of
independent hubs, which does exactly that.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio

from relayd.edge.daemon import Relayd
from relayd.transport.server import TcpConnection
from relayd.wire import METHOD_NAME, SERVICE_NAME, pb
from tests.conftest import start_edge
from tests.helpers import connect_request, post, wait_for

# A bound on each call, so a test that goes wrong ends instead of hanging.
CALL_TIMEOUT_SECONDS = 20


class GrpcioCall:
    """One Stream call on a grpcio channel, driven from trio (blocking reads in threads)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.SimpleQueue[pb.StreamRequest | None] = queue.SimpleQueue()
        method = channel.stream_stream(f"/{SERVICE_NAME}/{METHOD_NAME}",
                                       request_serializer=pb.StreamRequest.SerializeToString,
                                       response_deserializer=pb.StreamResponse.FromString)
        self._call = method(iter(self._requests.get, None), timeout=CALL_TIMEOUT_SECONDS)

    def send(self, message: pb.StreamRequest) -> None:
        self._requests.put(message)

    def ack(self, webhook_id: str) -> None:
        self.send(pb.StreamRequest(ack=pb.DeliveryAck(webhook_id=webhook_id, success=True,
                                                       status_code=200)))

    def half_close(self) -> None:
        """End the hub's side of the stream (the request iterator is exhausted)."""
        self._requests.put(None)

    def cancel(self) -> None:
        """Cancel the call: grpcio sends RST_STREAM; the channel stays."""
        self._call.cancel()
        self._requests.put(None)  # frees grpcio's thread that reads the request iterator

    async def recv(self) -> pb.StreamResponse | None:
        """The next message; None at an OK end; a failed call raises `grpc.RpcError`."""
        message: pb.StreamResponse | None = await trio.to_thread.run_sync(
            next, self._call, None, abandon_on_cancel=True)
        return message

    async def wait_served(self) -> None:
        """Wait until the edge is serving the call (its response headers arrived)."""
        await trio.to_thread.run_sync(self._call.initial_metadata, abandon_on_cancel=True)

    async def authenticate(self) -> None:
        self.send(connect_request())  # a fresh timestamp each time
        message = await self.recv()
        assert message is not None and message.connect_response.success

    async def recv_webhook(self) -> pb.WebhookEnvelope:
        """The next webhook, skipping heartbeats."""
        while True:
            message = await self.recv()
            assert message is not None, "stream ended while waiting for a webhook"
            if message.WhichOneof("message") == "webhook":
                return message.webhook

    async def wait_status(self) -> tuple[grpc.StatusCode, str]:
        """Read to the end of the call; its status code and message."""
        try:
            while await self.recv() is not None:
                pass
        except grpc.RpcError:
            pass
        return self._call.code(), self._call.details()


@contextmanager
def grpcio_channel(edge: Relayd) -> Iterator[grpc.Channel]:
    # no proxy from the environment: the calls must reach the edge, over one TCP connection
    with grpc.insecure_channel(f"127.0.0.1:{edge.addresses.grpc.port}",
                               options=[("grpc.enable_http_proxy", 0)]) as channel:
        yield channel


def only_connection(edge: Relayd) -> TcpConnection:
    """The edge's single TCP connection (the test fails if there are several)."""
    assert edge.grpc_server is not None
    (conn,) = edge.grpc_server.connections
    return conn


async def wait_delivered(edge: Relayd, webhook_id: str) -> None:
    assert edge.store is not None
    store = edge.store

    async def delivered() -> bool:
        row = await store.get(webhook_id)
        return row is not None and row["status"] == "delivered"

    await wait_for(delivered)


async def test_a_cancelled_stream_reopened_on_the_same_channel_gets_its_webhook_again(
    edge: Relayd,
) -> None:
    wid = (await post(edge.addresses.ingress, "alpha", b"a1")).json()["id"]
    with grpcio_channel(edge) as channel:
        first = GrpcioCall(channel)
        await first.authenticate()
        tcp = only_connection(edge)
        assert (await first.recv_webhook()).id == wid  # and never acked
        first.cancel()  # the hub ends its call; the channel stays
        second = GrpcioCall(channel)
        await second.authenticate()
        webhook = await second.recv_webhook()
        assert webhook.id == wid and webhook.attempt == 1
        second.ack(wid)
        await wait_delivered(edge, wid)
        assert only_connection(edge) is tcp  # the same TCP connection carried both
        second.cancel()


async def test_a_concurrent_stream_on_the_same_channel_replaces_the_first_with_aborted(
    edge: Relayd,
) -> None:
    wid = (await post(edge.addresses.ingress, "alpha", b"a1")).json()["id"]
    with grpcio_channel(edge) as channel:
        first = GrpcioCall(channel)
        await first.authenticate()
        tcp = only_connection(edge)
        assert (await first.recv_webhook()).id == wid
        second = GrpcioCall(channel)
        await second.authenticate()
        assert await first.wait_status() == (grpc.StatusCode.ABORTED,
                                             "replaced by a newer connection")
        webhook = await second.recv_webhook()
        assert webhook.id == wid and webhook.attempt == 1
        second.ack(wid)
        await wait_delivered(edge, wid)
        assert edge.manager.statistics().connected
        assert only_connection(edge) is tcp
        second.cancel()


async def test_hub_reconnects_on_the_same_channel_after_its_own_watchdog_fired(
    edge: Relayd,
) -> None:
    a1 = (await post(edge.addresses.ingress, "alpha", b"a1")).json()["id"]
    a2 = (await post(edge.addresses.ingress, "alpha", b"a2")).json()["id"]
    with grpcio_channel(edge) as channel:
        first = GrpcioCall(channel)
        await first.authenticate()
        tcp = only_connection(edge)
        assert (await first.recv_webhook()).id == a1
        # The hub's watchdog fired: it neither reads nor writes the old stream any more
        # (no cancel, no half-close) and opens the next one on the channel it keeps.
        second = GrpcioCall(channel)
        await second.authenticate()
        got = await second.recv_webhook()
        assert got.id == a1 and got.attempt == 1
        second.ack(a1)
        assert (await second.recv_webhook()).id == a2  # in order after the requeue
        second.ack(a2)
        await wait_delivered(edge, a2)
        assert only_connection(edge) is tcp
        first.cancel()
        second.cancel()


async def test_a_cancelled_call_ends_only_its_stream_when_the_edge_next_writes(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=0.1)
    with grpcio_channel(edge) as channel:
        call = GrpcioCall(channel)
        await call.authenticate()
        tcp = only_connection(edge)
        conn = edge.manager.current
        call.cancel()  # RST_STREAM, which purerpc does not report: the next heartbeat fails
        await wait_for(lambda: not edge.manager.is_connected())
        assert conn is not None and conn.close_reason == "hub reset the stream"
        assert only_connection(edge) is tcp  # the channel may carry the hub's next call
    assert "grpc connection closed on error" not in caplog.text


async def test_a_stale_stream_ends_with_a_status_and_the_channel_keeps_its_socket(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=0.1, stale_timeout=0.5,
                            connect_timeout=3)
    wid = (await post(edge.addresses.ingress, "alpha", b"a1")).json()["id"]
    with grpcio_channel(edge) as channel:
        first = GrpcioCall(channel)
        await first.authenticate()
        tcp = only_connection(edge)
        assert (await first.recv_webhook()).id == wid
        # The hub falls silent on the first stream and opens a second one, which is not
        # authenticated yet when the edge's watchdog gives up on the first.
        second = GrpcioCall(channel)
        await second.wait_served()
        assert await first.wait_status() == (
            grpc.StatusCode.UNAVAILABLE, "stale: no message from the hub within the stale timeout")
        await second.authenticate()
        webhook = await second.recv_webhook()
        assert webhook.id == wid and webhook.attempt == 1
        second.ack(wid)
        await wait_delivered(edge, wid)
        assert only_connection(edge) is tcp
        second.cancel()


async def test_a_socket_left_without_a_stream_is_closed_after_the_stale_timeout(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=0.1, stale_timeout=0.5)
    with grpcio_channel(edge) as channel:
        call = GrpcioCall(channel)
        await call.authenticate()
        call.half_close()  # the hub ends its stream and keeps the channel, idle
        assert (await call.wait_status())[0] == grpc.StatusCode.OK
        only_connection(edge)  # not closed with the stream: the hub may open its next one
        await wait_for(lambda: not edge.grpc_server.connections)
    assert "grpc connection closed: no stream for 0.5s" in caplog.text


class RawH2Hub:
    """A hub speaking plain HTTP/2 (h2 library) that grants the edge no send window.

    With ``SETTINGS_INITIAL_WINDOW_SIZE`` 0 the edge can send no message on a stream
    until the hub grants that stream a window: what a hub that stops reading does.
    """

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock = sock
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                       header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.messages: dict[int, list[pb.StreamResponse]] = {}
        self.trailers: dict[int, dict[str, str]] = {}
        self._buffers: dict[int, bytes] = {}

    async def open_stream(self, stream_id: int, *, window: int = 0) -> None:
        self.h2.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE_NAME}/{METHOD_NAME}"),
            (":authority", "relay"), ("content-type", "application/grpc"), ("te", "trailers")])
        if window:
            self.h2.increment_flow_control_window(window, stream_id=stream_id)
        await self.flush()

    async def send(self, stream_id: int, *messages: pb.StreamRequest) -> None:
        """Send ``messages`` as flow control allows (waiting for the edge's window updates)."""
        data = b"".join(b"\x00" + m.ByteSize().to_bytes(4, "big") + m.SerializeToString()
                        for m in messages)
        while data:
            await self.wait_until(lambda: self.h2.local_flow_control_window(stream_id) > 0)
            size = min(len(data), self.h2.local_flow_control_window(stream_id),
                       self.h2.max_outbound_frame_size)
            self.h2.send_data(stream_id, data[:size])
            data = data[size:]
            await self.flush()

    async def flush(self) -> None:
        await self.sock.send_all(self.h2.data_to_send())

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Read from the edge until ``done()``."""
        while not done():
            data = await self.sock.receive_some(65536)
            assert data, "the edge closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)
                    self._received(event.stream_id, event.data)
                elif isinstance(event, h2.events.TrailersReceived):
                    self.trailers[event.stream_id] = dict(event.headers)
            await self.flush()

    def _received(self, stream_id: int, data: bytes) -> None:
        buffer = self._buffers.get(stream_id, b"") + data
        while len(buffer) >= 5 and len(buffer) >= 5 + int.from_bytes(buffer[1:5], "big"):
            end = 5 + int.from_bytes(buffer[1:5], "big")
            self.messages.setdefault(stream_id, []).append(
                pb.StreamResponse.FromString(buffer[5:end]))
            buffer = buffer[end:]
        self._buffers[stream_id] = buffer


async def test_an_unauthenticated_stream_on_an_authenticated_connection_has_its_own_deadline(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, connect_timeout=0.3)
    sock = await trio.open_tcp_stream(edge.addresses.grpc.host, edge.addresses.grpc.port)
    async with sock:
        hub = RawH2Hub(sock)
        await hub.open_stream(1, window=1 << 20)
        await hub.send(1, connect_request())
        with trio.fail_after(3):
            await hub.wait_until(lambda: bool(hub.messages.get(1)))
        assert hub.messages[1][0].connect_response.success
        tcp = only_connection(edge)
        # A second stream that never sends its ConnectRequest, and never lets the edge
        # send the answer: the stream is still ended, 2 x connect_timeout after it opened.
        await hub.open_stream(3)
        started = trio.current_time()
        with trio.fail_after(3):
            await hub.wait_until(lambda: 3 in hub.trailers)
        assert trio.current_time() - started >= 0.6
        assert hub.trailers[3]["grpc-status"] == "16"  # UNAUTHENTICATED
        assert hub.messages.get(3) is None  # the refusal could not be sent
        # the authenticated stream and its TCP connection are untouched
        assert edge.manager.is_connected() and only_connection(edge) is tcp


async def test_what_a_hub_still_sends_on_its_replaced_stream_is_dropped_not_an_error(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path)
    wid = (await post(edge.addresses.ingress, "alpha", b"a1")).json()["id"]
    sock = await trio.open_tcp_stream(edge.addresses.grpc.host, edge.addresses.grpc.port)
    async with sock:
        hub = RawH2Hub(sock)
        with trio.fail_after(5):
            await hub.open_stream(1, window=1 << 20)
            await hub.send(1, connect_request())
            await hub.wait_until(lambda: len(hub.messages.get(1, [])) >= 2)  # and the webhook
            await hub.open_stream(3, window=1 << 20)
            await hub.send(3, connect_request())
            await hub.wait_until(lambda: 1 in hub.trailers and len(hub.messages.get(3, [])) >= 2)
            assert hub.trailers[1]["grpc-status"] == "10"  # ABORTED: replaced
            assert hub.messages[3][1].webhook.id == wid
            tcp = only_connection(edge)
            # What the hub still had in flight on the old stream, and its end, arrive
            # after the edge is done with that stream.
            heartbeat = pb.StreamRequest(heartbeat=pb.Heartbeat(timestamp=1))
            await hub.send(1, *[heartbeat] * 100)
            hub.h2.end_stream(1)
            await hub.send(3, pb.StreamRequest(ack=pb.DeliveryAck(
                webhook_id=wid, success=True, status_code=200)))
            await wait_delivered(edge, wid)
        assert only_connection(edge) is tcp
