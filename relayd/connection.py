"""One authenticated hub stream and the tasks that serve it.

A `HubConnection` owns a nursery with four tasks: the **sender** (the only writer on
the gRPC stream, fed by a bounded outbound channel), the **receiver** (acks go to the
ack writer's channel), the heartbeat sender and the stale watchdog. `close` cancels the
TCP connection's scope, which ends this nursery and closes the socket; nothing outside
this connection is touched.

Per-endpoint dispatch state (`Lane`: what is in flight, where the cursor is) also lives
here, so a replaced or stale connection takes its in-flight set with it and the
webhooks are simply read again, in order, from the database for the next connection.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

import trio
from google.protobuf.message import DecodeError
from purerpc.grpclib.exceptions import InvalidArgumentError

from relayd.heartbeat import StaleWatchdog, send_heartbeats
from relayd.store import AckRecord, StoredWebhook
from relayd.wire import pb

__all__ = ["HubConnection", "Lane", "TransportControl"]

log = logging.getLogger(__name__)


class TransportControl(Protocol):
    """What a connection needs from its TCP connection: a way to tear it down."""

    peer: str

    def abort(self) -> None: ...


class _Stream(Protocol):
    async def send_message(self, message: pb.StreamResponse) -> None: ...
    async def receive_message(self) -> pb.StreamRequest | None: ...


@dataclass
class Lane:
    """Dispatch state of one endpoint on one connection."""

    in_flight: deque[StoredWebhook] = field(default_factory=deque)
    # seq of the last webhook handed to the hub; the next read starts after it.
    cursor: int = 0
    # Bumped when the cursor is rewound, so a round that read rows before the rewind
    # does not send them.
    generation: int = 0
    # Webhooks dropped from in_flight by a rewind whose ack (for that earlier copy) is
    # still to come: the next ack naming one belongs to the old copy, not the resent one.
    orphans: Counter[str] = field(default_factory=Counter)


class HubConnection:
    """An authenticated hub: send webhooks with `send`, end it with `close`."""

    def __init__(
        self,
        *,
        hub_id: str,
        endpoint_ids: frozenset[str] | None,
        capabilities: frozenset[str],
        stream: _Stream,
        transport: TransportControl,
        ack_sink: trio.MemorySendChannel[AckRecord],
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
        self._heartbeat_interval = heartbeat_interval
        self._outbound_send, self._outbound_receive = trio.open_memory_channel[
            pb.StreamResponse
        ](buffer_size)
        self._watchdog = StaleWatchdog(stale_timeout, self._on_stale)

    def __repr__(self) -> str:
        return f"<HubConnection hub_id={self.hub_id} peer={self.peer}>"

    def serves(self, endpoint_id: str) -> bool:
        return self.endpoint_ids is None or endpoint_id in self.endpoint_ids

    def in_flight_count(self) -> int:
        return sum(len(lane.in_flight) for lane in self.lanes.values())

    def buffered(self) -> int:
        """Messages waiting in the outbound buffer."""
        return self._outbound_send.statistics().current_buffer_used

    async def send(self, message: pb.StreamResponse) -> None:
        """Queue a message for the hub; waits while the buffer is full (backpressure).

        Raises `trio.BrokenResourceError` if the connection has ended.
        """
        await self._outbound_send.send(message)

    def close(self, reason: str) -> None:
        """End this connection now: cancel its tasks and close its TCP socket."""
        if not self.close_reason:
            self.close_reason = reason
        self._transport.abort()

    async def run(self) -> None:
        """Serve the stream until the hub leaves, a protocol error, or `close`.

        Raises an `RpcFailedError` for a protocol error the hub should hear about.
        """
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._watchdog.run)
                nursery.start_soon(self._sender)
                nursery.start_soon(send_heartbeats, self.send, self._heartbeat_interval,
                                   pb.StreamResponse)
                await self._receiver()
                nursery.cancel_scope.cancel()
        finally:
            self._outbound_receive.close()
            self.closed.set()

    async def _sender(self) -> None:
        async with self._outbound_receive:
            async for message in self._outbound_receive:
                await self._stream.send_message(message)

    async def _receiver(self) -> None:
        while True:
            try:
                message = await self._stream.receive_message()
            except DecodeError:
                self.close_reason = "malformed message"
                raise InvalidArgumentError("malformed StreamRequest") from None
            if message is None:
                self.close_reason = self.close_reason or "hub closed the stream"
                return
            self.last_seen = time.time()
            self._watchdog.touch()
            kind = message.WhichOneof("message")
            if kind == "ack":
                ack = message.ack
                await self._ack_sink.send(
                    AckRecord(
                        webhook_id=ack.webhook_id,
                        success=ack.success,
                        status_code=ack.status_code,
                        error_message=ack.error_message,
                        permanent_failure=ack.permanent_failure,
                    )
                )
            elif kind == "connect":
                self.close_reason = "second ConnectRequest"
                raise InvalidArgumentError("ConnectRequest after the stream was authenticated")
            # A heartbeat (or an empty message from a newer hub) only proves liveness.

    def _on_stale(self) -> None:
        log.warning("hub connection stale: no message for the stale timeout hub_id=%s peer=%s",
                    self.hub_id, self.peer)
        self.close("stale: no message from the hub within the stale timeout")
