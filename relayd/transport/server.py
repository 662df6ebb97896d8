"""The gRPC listener: purerpc's HTTP/2 machinery under relayd's own connection handling.

purerpc's `Server` binds every interface with SO_REUSEPORT, never closes accepted
sockets, and swallows `trio.Cancelled` with bare ``except:`` (see shared/notes/stack.md).
So relayd owns the listener and the per-connection loop and reuses only purerpc's
protocol layer (through `relayd.transport._purerpc`):

- each TCP connection runs inside its own cancel scope (`TcpConnection.abort`), and its
  socket is force-closed when it ends, however it ends;
- each HTTP/2 stream is routed by path; only ``/relay.v1.RelayService/Stream`` exists;
- a connection's error stays inside that connection; limits per peer and in total, and
  failure logging that cannot be flooded, are `relayd.transport.guard.PeerGuard`'s.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import trio
from anyio.streams.tls import TLSStream
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.exceptions import RpcFailedError
from purerpc.grpclib.status import Status, StatusCode

from relayd.common.runner import leaves
from relayd.common.tomlconfig import ListenAddress
from relayd.transport import _purerpc
from relayd.transport.guard import PeerGuard
from relayd.wire import METHOD_NAME, SERVICE_NAME, pb

__all__ = ["GrpcServer", "StreamHandler", "TcpConnection"]

log = logging.getLogger(__name__)

# Largest message relayd accepts from a hub (its messages are far smaller).
MAX_INBOUND_MESSAGE = 1024 * 1024


class TcpConnection:
    """One accepted TCP connection; `abort` ends it and closes its socket.

    Until `authenticated` is called the connection has a deadline: a peer that opens
    TCP and never completes a ConnectRequest does not keep a socket forever.
    """

    def __init__(self, host: str, peer: str, unauthenticated_deadline: float) -> None:
        self.host = host
        self.peer = peer
        self.scope = trio.CancelScope(deadline=unauthenticated_deadline)

    def authenticated(self) -> None:
        self.scope.deadline = math.inf

    def abort(self) -> None:
        self.scope.cancel()


StreamHandler = Callable[[GRPCProtoStream, TcpConnection], Awaitable[None]]


def _peer(stream: anyio.abc.SocketStream) -> tuple[str, str]:
    """(host, "host:port") of the remote end."""
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "unknown", "unknown"
    if isinstance(address, tuple):
        host, port = str(address[0]), address[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address), str(address)


class GrpcServer:
    """Serves the relay service on ``listen``; `run` reports the bound address."""

    def __init__(self, listen: ListenAddress, handler: StreamHandler, *,
                 unauthenticated_timeout: float, guard: PeerGuard,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._listen = listen
        self._unauthenticated_timeout = unauthenticated_timeout
        self._handler = handler
        self._guard = guard
        self._ssl_context = ssl_context
        # Hub -> edge messages are small (ConnectRequest, acks, heartbeats): a low inbound
        # limit keeps an unauthenticated peer from making relayd buffer a 32 MiB message.
        self._config = GRPCConfiguration(client_side=False,
                                         max_message_length=MAX_INBOUND_MESSAGE)
        self.connections: set[TcpConnection] = set()

    async def run(self, *, task_status: trio.TaskStatus[ListenAddress] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        listener: anyio.abc.Listener[anyio.abc.SocketStream] = await anyio.create_tcp_listener(
            local_host=self._listen.host, local_port=self._listen.port
        )
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started(ListenAddress(self._listen.host, port))
            await listener.serve(self._serve_connection)

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    async def _serve_connection(self, sock: anyio.abc.SocketStream) -> None:
        host, peer = _peer(sock)
        if not self._guard.admit(host):
            await anyio.aclose_forcefully(sock)
            return
        conn = TcpConnection(host, peer, trio.current_time() + self._unauthenticated_timeout)
        self.connections.add(conn)
        stream: anyio.abc.ByteStream = sock
        try:
            with conn.scope:
                try:
                    if self._ssl_context is not None:
                        # inside the connection's deadline: a stalled handshake is cut too
                        stream = await TLSStream.wrap(sock, ssl_context=self._ssl_context,
                                                      standard_compatible=False)
                    async with _purerpc.ServerSocket(self._config, stream) as grpc_socket, \
                            trio.open_nursery() as nursery:
                        async for grpc_stream in grpc_socket.listen():
                            nursery.start_soon(self._serve_stream, grpc_stream, conn)
                        # The peer closed the TCP connection. purerpc does not tell the
                        # streams, which would wait for messages forever: end them here.
                        nursery.cancel_scope.cancel()
                finally:
                    await anyio.aclose_forcefully(stream)
        except Exception as exc:  # the connection boundary: log it, keep serving the rest
            self._guard.failure(host, "error", "grpc connection closed on error peer=%s "
                                "error=%s", peer, _describe(exc))
        else:
            if conn.scope.cancelled_caught and conn.scope.deadline != math.inf:
                self._guard.failure(host, "unauthenticated", "grpc connection closed: not "
                                    "authenticated in time peer=%s", peer)
        finally:
            self.connections.discard(conn)
            self._guard.closed(host)

    async def _serve_stream(self, stream: GRPCProtoStream, conn: TcpConnection) -> None:
        await stream.start_response()
        event = await stream.receive_event()
        if not isinstance(event, RequestReceived):
            await stream.close(Status(StatusCode.INTERNAL, status_message="expected headers"))
            return
        if (event.service_name, event.method_name) != (SERVICE_NAME, METHOD_NAME):
            await stream.close(Status(
                StatusCode.UNIMPLEMENTED,
                status_message=f"method {event.service_name}/{event.method_name} is not "
                               f"implemented"[:200],
            ))
            return
        stream.expect_message_type(pb.StreamRequest)
        status = Status(StatusCode.OK)
        try:
            await self._handler(stream, conn)
        except* RpcFailedError as group:  # raised in the connection's nursery, so grouped
            status = leaves(group)[0].status  # type: ignore[attr-defined]
        await stream.close(status)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"[:300]
