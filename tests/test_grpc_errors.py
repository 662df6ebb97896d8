"""The gRPC connection boundary: relayd's own bugs are logged, only the peer's errors count.

A real `GrpcServer` on loopback with a real `PeerGuard` that refuses a peer after one
failure (``failures_per_interval=1``): whether a second connection from the same address
is admitted shows whether the first one was held against the peer.
"""

from __future__ import annotations

import logging

import anyio
import h2.config
import h2.connection
import pytest
import trio
from purerpc.grpc_proto import GRPCProtoStream

from relayd.edge.config import ListenAddress
from relayd.transport.guard import PeerGuard
from relayd.transport.server import GrpcServer, RpcStream
from tests.helpers import TestHub, connect_request, wait_for

# what a client sees when the server resets its connection under it
RESET = (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.BrokenResourceError)


class Handler:
    """A stream handler that reads the first message, then fails with ``bug``."""

    def __init__(self, bug: Exception, *, grouped: bool = False) -> None:
        self.bug = bug
        self.grouped = grouped
        self.calls = 0

    async def __call__(self, stream: GRPCProtoStream, rpc: RpcStream) -> None:
        self.calls += 1
        await stream.receive_message()
        if self.grouped:  # raised in a task, as HubConnection's tasks would
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fail)
        await self._fail()

    async def _fail(self) -> None:
        raise self.bug


async def start_server(nursery: trio.Nursery, handler: Handler) -> tuple[ListenAddress,
                                                                          PeerGuard]:
    guard = PeerGuard(max_connections=10, max_per_peer=10, failures_per_interval=1)
    server = GrpcServer(ListenAddress("127.0.0.1", 0), handler, unauthenticated_timeout=5,
                        idle_timeout=5, guard=guard)
    address: ListenAddress = await nursery.start(server.run)
    return address, guard


async def hub_attempt(address: ListenAddress, guard: PeerGuard) -> None:
    """Open a stream, send a ConnectRequest, read until the server drops the connection."""
    try:
        async with TestHub.open(address) as hub:
            await hub.send(connect_request())
            with trio.fail_after(5):
                assert await hub.recv() is None  # dropped, nothing answered
    except* RESET:
        pass  # refused: reset while this client was still writing
    await wait_for(lambda: guard.open_connections == 0)  # the server is done with it


async def send_bytes(address: ListenAddress, data: bytes) -> None:
    """Send ``data`` on a fresh TCP connection and read until the server closes it."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        try:
            await stream.send_all(data)
            with trio.fail_after(5):
                while await stream.receive_some(65536):
                    pass
        except trio.BrokenResourceError:
            pass


def request_without_content_type() -> bytes:
    """A valid HTTP/2 request for the Stream RPC, but without content-type (purerpc: KeyError)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                          (":path", "/relay.v1.RelayService/Stream"), (":authority", "relay"),
                          ("te", "trailers")])
    return bytes(conn.data_to_send())


@pytest.mark.parametrize("grouped", [False, True], ids=["raised", "raised-in-a-task"])
@pytest.mark.parametrize("bug", [RuntimeError("relayd bug"), AssertionError("relayd bug")],
                         ids=["RuntimeError", "AssertionError"])
async def test_a_handler_bug_is_logged_with_its_traceback_and_not_held_against_the_peer(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, bug: Exception, grouped: bool
) -> None:
    handler = Handler(bug, grouped=grouped)
    address, guard = await start_server(nursery, handler)
    await hub_attempt(address, guard)
    await hub_attempt(address, guard)
    assert handler.calls == 2  # the second connection was admitted: nothing was counted
    errors = [r for r in caplog.records if r.name == "relayd.transport.server"]
    assert [r.levelno for r in errors] == [logging.ERROR] * 2
    for record in errors:
        assert "grpc connection closed by an internal error" in record.getMessage()
        assert "peer=127.0.0.1:" in record.getMessage()
        assert record.exc_info is not None
        traceback = logging.Formatter().formatException(record.exc_info)
        assert f"{type(bug).__name__}: relayd bug" in traceback
        assert "in _fail" in traceback  # where it was raised
    assert "refused" not in caplog.text


@pytest.mark.parametrize("data", [
    b"this is not HTTP/2\r\n\r\n" * 8,  # h2 rejects the connection preface
    request_without_content_type(),  # purerpc's parser fails with KeyError
], ids=["garbage-bytes", "request-without-content-type"])
async def test_a_protocol_error_still_counts_against_the_peer(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    handler = Handler(RuntimeError("never called"))
    address, guard = await start_server(nursery, handler)
    await send_bytes(address, data)
    await wait_for(lambda: guard.open_connections == 0)
    assert "grpc connection closed on error peer=127.0.0.1:" in caplog.text
    await hub_attempt(address, guard)
    assert handler.calls == 0  # refused: one failure is this guard's limit
    assert "grpc connection refused peer=127.0.0.1 reason=more than 1 failures" in caplog.text
    assert "internal error" not in caplog.text
