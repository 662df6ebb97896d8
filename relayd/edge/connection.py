"""One authenticated hub stream and the tasks that serve it.

A `HubConnection` owns a nursery with four tasks: the **sender** (the only writer on
the gRPC stream, fed by a bounded outbound channel), the **receiver** (acks go to the
ack writer's channel), the heartbeat sender and the stale watchdog. `end` cancels that
nursery and ends the gRPC stream with a status (replaced: ABORTED; stale: UNAVAILABLE).
A gRPC client multiplexes calls over one TCP connection, so the hub's next stream may
share it: the TCP connection is closed only if no other stream uses it (see
`relayd.transport.server.RpcStream`); nothing outside this stream is touched.

Per-endpoint dispatch state (`relayd.edge.lane.Lane`) also lives here, so a replaced or
stale connection takes its in-flight set with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import trio
from google.protobuf.message import DecodeError
from purerpc.grpclib.exceptions import InvalidArgumentError, RpcFailedError
from purerpc.grpclib.status import Status, StatusCode

from relayd.common.batching import take_batch
from relayd.common.heartbeat import StaleWatchdog, send_heartbeats
from relayd.edge.lane import Lane
from relayd.edge.store import AckRecord
from relayd.transport.stream import MessageStream, StreamReset
from relayd.wire import pb

__all__ = ["HubConnection", "TransportControl"]

log = logging.getLogger(__name__)

# Most queued messages written to the hub in one HTTP/2 write.
SEND_BATCH_MAX = 256
# Most received messages taken (and their flow-control credit returned) at once.
RECEIVE_BATCH_MAX = 256


class TransportControl(Protocol):
    """What a hub stream needs from the transport under it (`RpcStream`)."""

    peer: str

    def close_connection_when_done(self) -> None:
        """Once this stream has ended, close its TCP connection unless another uses it."""


class HubConnection:
    """An authenticated hub stream: send webhooks with `send`, end it with `end`."""

    def __init__(
        self,
        *,
        hub_id: str,
        endpoint_ids: frozenset[str] | None,
        capabilities: frozenset[str],
        stream: MessageStream[pb.StreamRequest],
        transport: TransportControl,
        ack_sink: trio.MemorySendChannel[AckRecord],
        on_delivered: Callable[[], None] = lambda: None,
        buffer_size: int,
        heartbeat_interval: float,
        stale_timeout: float,
    ) -> None:
        self.hub_id = hub_id
        self.peer = transport.peer
        self.endpoint_ids = endpoint_ids  # None: all endpoints
        self.capabilities = capabilities
        self.connected_since = time.time()
        self.last_seen = self.connected_since
        self.lanes: dict[str, Lane] = {}
        self.closed = trio.Event()
        self.close_reason = ""
        self._stream = stream
        self._transport = transport
        self._ack_sink = ack_sink
        self._on_delivered = on_delivered
        self._heartbeat_interval = heartbeat_interval
        # serialized StreamResponses (webhooks are serialized by the dispatcher)
        self._outbound_send, self._outbound_receive = trio.open_memory_channel[bytes](
            buffer_size)
        self._watchdog = StaleWatchdog(stale_timeout, self._on_stale)
        self._scope = trio.CancelScope()  # `end` cancels it, even before `run` entered it
        self._end_status: Status | None = None

    def __repr__(self) -> str:
        return f"<HubConnection hub_id={self.hub_id} peer={self.peer}>"

    def serves(self, endpoint_id: str) -> bool:
        return self.endpoint_ids is None or endpoint_id in self.endpoint_ids

    def in_flight_count(self) -> int:
        return sum(len(lane.in_flight) for lane in self.lanes.values())

    def buffered(self) -> int:
        """Messages waiting in the outbound buffer."""
        return self._outbound_send.statistics().current_buffer_used

    def send_nowait(self, message: bytes) -> bool:
        """Queue a message if the buffer has room (no checkpoint); False if it is full.

        Raises `trio.BrokenResourceError` if the connection has ended.
        """
        try:
            self._outbound_send.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def send(self, message: bytes) -> None:
        """Queue a message for the hub; waits while the buffer is full (backpressure).

        Raises `trio.BrokenResourceError` if the connection has ended.
        """
        await self._outbound_send.send(message)

    def end(self, reason: str, code: StatusCode = StatusCode.UNAVAILABLE) -> None:
        """End this stream now: cancel its tasks; `run` raises ``code`` with ``reason``.

        The hub hears ``reason`` as the grpc-message. The TCP connection under the stream
        is closed after it unless another stream uses it (the hub's next one, on the same
        channel). Only the first call counts.
        """
        if self._end_status is None:
            self._end_status = Status(code, status_message=reason)
            self.close_reason = self.close_reason or reason
            self._transport.close_connection_when_done()
        self._scope.cancel()

    async def run(self) -> None:
        """Serve the stream until the hub leaves, a protocol error, or `end`.

        Raises an `RpcFailedError` for a protocol error the hub should hear about, and for
        `end`.
        """
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._watchdog.run)
                    nursery.start_soon(self._sender)
                    nursery.start_soon(send_heartbeats, self._send_message,
                                       self._heartbeat_interval, pb.StreamResponse)
                    await self._receiver()
                    nursery.cancel_scope.cancel()
        finally:
            self._outbound_receive.close()
            self.closed.set()
        if self._end_status is not None:
            raise RpcFailedError(self._end_status)

    async def _send_message(self, message: pb.StreamResponse) -> None:
        await self.send(message.SerializeToString())

    async def _sender(self) -> None:
        async with self._outbound_receive:
            async for first in self._outbound_receive:
                # Whatever queued up while the last write ran goes out in one write.
                batch = take_batch(first, self._outbound_receive, SEND_BATCH_MAX)
                try:
                    await self._stream.send_messages(batch)
                except StreamReset:
                    # The hub cancelled its call; its channel (and TCP connection) may
                    # carry its next stream, so only this stream ends.
                    self.close_reason = self.close_reason or "hub reset the stream"
                    self._scope.cancel()
                    return

    async def _receiver(self) -> None:
        while True:
            try:
                messages, ended = await self._stream.receive_messages(RECEIVE_BATCH_MAX)
            except DecodeError:
                self.close_reason = "malformed message"
                raise InvalidArgumentError("malformed StreamRequest") from None
            if messages:
                self.last_seen = time.time()
                self._watchdog.touch()
            released = False
            for message in messages:
                released |= await self._handle(message)
            if released:
                self._on_delivered()
            if ended:
                self.close_reason = self.close_reason or "hub closed the stream"
                return

    async def _handle(self, message: pb.StreamRequest) -> bool:
        """Act on one hub message; True if it freed an in-flight slot."""
        kind = message.WhichOneof("message")
        released = False
        if kind == "ack":
            ack = message.ack
            if ack.success:
                released = self._release(ack.webhook_id)
            record = AckRecord(ack.webhook_id, ack.success, ack.status_code,
                               ack.error_message, ack.permanent_failure)
            try:
                self._ack_sink.send_nowait(record)  # no checkpoint per ack when there is room
            except trio.WouldBlock:
                await self._ack_sink.send(record)
        elif kind == "connect":
            self.close_reason = "second ConnectRequest"
            raise InvalidArgumentError("ConnectRequest after the stream was authenticated")
        # A heartbeat (or an empty message from a newer hub) only proves liveness.
        return released

    def _release(self, webhook_id: str) -> bool:
        """A delivered webhook leaves its endpoint's window as soon as the ack arrives.

        Its slot need not wait for the ack writer's commit: the next read starts after the
        cursor, so it is not sent again, and the database records it shortly after. Only
        failures (which rewind the endpoint) wait for their commit. Acks come in the order
        sent, so the webhook is at the head of its lane; anything else is left to the ack
        writer's outcome.
        """
        return any(lane.release_head(webhook_id) for lane in self.lanes.values())

    def _on_stale(self) -> None:
        log.warning("hub connection stale: no message for the stale timeout hub_id=%s peer=%s",
                    self.hub_id, self.peer)
        self.end("stale: no message from the hub within the stale timeout")
