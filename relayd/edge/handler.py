"""The Stream RPC handler: authenticate the hub, then serve it as the current connection.

The first hub message must be a ConnectRequest, within ``connect_timeout``. A failed
attempt is answered ``ConnectResponse{success:false, error}`` and ends the RPC with
UNAUTHENTICATED; it never touches the connected hub. A good one is answered
``success:true``, replaces any current hub, and runs until it ends. Each stream is judged
on its own: one on a TCP connection where an earlier stream authenticated gets the same
deadline (`RpcStream`, lifted once it is answered ``success:true``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import NoReturn, Protocol

import trio
from google.protobuf.message import DecodeError
from purerpc.grpclib.exceptions import UnauthenticatedError

from relayd.edge.auth import Authenticator
from relayd.edge.config import RelayConfig
from relayd.edge.connection import HubConnection
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import AckRecord
from relayd.transport.guard import PeerGuard
from relayd.transport.server import RpcStream
from relayd.transport.stream import BatchStream
from relayd.wire import pb

__all__ = ["RelayStreamHandler"]


class _RawStream(Protocol):
    """purerpc's server stream, message by message (the authentication phase)."""

    async def send_message(self, message: pb.StreamResponse) -> None: ...
    async def receive_message(self) -> pb.StreamRequest | None: ...

log = logging.getLogger(__name__)


class RelayStreamHandler:
    """Called by `GrpcServer` for each Stream RPC."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        manager: ConnectionManager,
        ack_sink: trio.MemorySendChannel[AckRecord],
        on_delivered: Callable[[], None] = lambda: None,
        relay: RelayConfig,
        endpoint_ids: Collection[str],
        guard: PeerGuard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth = authenticator
        self._manager = manager
        self._ack_sink = ack_sink
        self._on_delivered = on_delivered
        self._relay = relay
        self._guard = guard
        self._endpoint_ids = frozenset(endpoint_ids)
        self._clock = clock

    def reconfigure(self, *, secret: bytes, endpoint_ids: Collection[str]) -> None:
        """Authenticate new streams with ``secret``, and know ``endpoint_ids`` (config
        reload); the connected hub is not touched."""
        self._auth.update_secret(secret)
        self._endpoint_ids = frozenset(endpoint_ids)

    async def __call__(self, stream: _RawStream, transport: RpcStream) -> None:
        request = await self._receive_connect(stream, transport)
        if request is None:
            return
        hub_id = request.hub_id
        reason = self._auth.check(hub_id, request.timestamp, request.signature, self._clock())
        if reason is not None:
            await self._reject(stream, transport, reason, hub_id)
        endpoint_ids = frozenset(request.endpoint_ids) or None
        unknown = sorted((endpoint_ids or frozenset()) - self._endpoint_ids)
        if unknown:
            log.warning("hub asked for unknown endpoints (ignored) hub_id=%s endpoints=%s",
                        hub_id, unknown[:20])
        conn = HubConnection(
            hub_id=hub_id,
            endpoint_ids=endpoint_ids,
            capabilities=frozenset(request.capabilities),
            stream=BatchStream(stream),
            transport=transport,
            ack_sink=self._ack_sink,
            on_delivered=self._on_delivered,
            buffer_size=self._relay.buffer_size,
            heartbeat_interval=self._relay.heartbeat_interval,
            stale_timeout=self._relay.stale_timeout,
        )
        await stream.send_message(
            pb.StreamResponse(connect_response=pb.ConnectResponse(success=True))
        )
        transport.authenticated()
        self._manager.attach(conn)
        try:
            await conn.run()
        finally:
            self._manager.detach(conn)

    async def _receive_connect(self, stream: _RawStream, transport: RpcStream
                               ) -> pb.ConnectRequest | None:
        with trio.move_on_after(self._relay.connect_timeout):
            try:
                first = await stream.receive_message()
            except DecodeError:
                await self._reject(stream, transport, "malformed ConnectRequest")
            if first is None:
                return None  # the peer ended the stream without a word
            if first.WhichOneof("message") != "connect":
                await self._reject(stream, transport, "first message must be a ConnectRequest")
            return first.connect
        await self._reject(stream, transport, "no ConnectRequest within the connect timeout")

    async def _reject(self, stream: _RawStream, transport: RpcStream, reason: str,
                      hub_id: str = "") -> NoReturn:
        self._guard.failure(transport.host, "auth", "hub authentication failed hub_id=%.64r "
                            "peer=%s reason=%s", hub_id, transport.peer, reason)
        await stream.send_message(
            pb.StreamResponse(connect_response=pb.ConnectResponse(success=False, error=reason))
        )
        raise UnauthenticatedError(reason)
