"""The gRPC listener: purerpc's HTTP/2 machinery under relayd's own connection handling.

purerpc's `Server` binds every interface with SO_REUSEPORT, never closes accepted
sockets, and swallows `trio.Cancelled` with bare ``except:`` (see shared/notes/stack.md).
So relayd owns the listener and the per-connection loop and reuses only purerpc's
protocol layer (through `relayd.transport._purerpc`):

- each TCP connection runs inside its own cancel scope (`TcpConnection.abort`), and its
  socket is force-closed when it ends, however it ends;
- each HTTP/2 stream is routed by path; only ``/relay.v1.RelayService/Stream`` exists.
  gRPC clients multiplex calls over one TCP connection, so a stream ends on its own
  (`RpcStream`: a deadline to authenticate, a status, a reset by the peer) without ending
  the others on its connection;
- the accept loop waits out a lack of file descriptors or kernel memory instead of
  ending (as trio's ``serve_listeners`` does; anyio's ``Listener.serve`` does not);
- a connection's error stays inside that connection; limits per peer and in total, and
  failure logging that cannot be flooded, are `relayd.transport.guard.PeerGuard`'s;
- only what the peer did counts against it: an error of relayd's own (a bug in a
  handler) is logged with its traceback and ends that connection, nothing else.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import NoReturn, cast

import anyio
import anyio.abc
import h2.exceptions
import trio
from anyio.streams.tls import TLSStream
from google.protobuf.message import DecodeError
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.exceptions import ProtocolError, RpcFailedError
from purerpc.grpclib.status import Status, StatusCode

from relayd.common.runner import describe, leaves
from relayd.common.tomlconfig import ListenAddress
from relayd.transport import _purerpc
from relayd.transport.guard import PeerGuard
from relayd.transport.stream import StreamReset
from relayd.wire import METHOD_NAME, SERVICE_NAME, pb

__all__ = ["GrpcServer", "RpcStream", "StreamHandler", "TcpConnection"]

log = logging.getLogger(__name__)

# Largest message relayd accepts from a hub (its messages are far smaller).
MAX_INBOUND_MESSAGE = 1024 * 1024

# Longest wait, when relayd closes a connection, for what is queued on it to be written
# (the last stream's status): a peer that does not read does not keep the socket.
CLOSE_WRITE_SECONDS = 1.0
# accept(2) errors that mean the process or the system is out of file descriptors or
# kernel memory, not that the listener is broken (trio's ``ACCEPT_CAPACITY_ERRNOS``).
# New connections wait in the kernel's backlog until some are freed.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Pause before accepting again after one of those (trio's ``SLEEP_TIME``).
ACCEPT_RETRY_SECONDS = 0.1
# accept(2) errors that only lose the one connection being accepted: a firewall denial
# (EPERM) or a connection aborted before it was accepted (trio's SocketListener skips the
# same ones; anyio's listener passes them on).
ACCEPT_SKIP_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
        "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    ) if hasattr(errno, name)
)


class MalformedInput(Exception):
    """What the peer sent broke the HTTP/2 or gRPC parser; ``__cause__`` says how.

    purerpc's parser raises more than its ``ProtocolError`` on malformed requests: a
    missing content-type is a KeyError, a bad grpc-timeout, path or ``-bin`` header a
    ValueError, repeated headers an AttributeError or TypeError, a bad compressed message
    ``zlib.error``, a snappy one ImportError. Whatever the receive loop raises is
    therefore the peer's doing, whatever its type.
    """


# Errors that count against the peer (`PeerGuard.failure`): it broke the connection or the
# protocol. Anything else is relayd's own bug: logged with its traceback, never counted.
PEER_ERRORS: tuple[type[Exception], ...] = (
    MalformedInput,
    anyio.BrokenResourceError,  # the socket failed (reset, broken pipe): the OSError is the cause
    anyio.EndOfStream,  # the peer closed the connection during the TLS handshake
    ssl.SSLError,  # TLS handshake or record errors
    h2.exceptions.ProtocolError,  # e.g. sending on a stream the peer reset, flow control
    ProtocolError,  # purerpc's (bad request headers, message too large)
    DecodeError,  # a message that is not a StreamRequest
)


class TcpConnection:
    """One accepted TCP connection and the streams on it; `close` or `abort` ends it.

    Until a stream on it authenticates, the connection has a deadline: a peer that opens
    TCP and never completes a ConnectRequest does not keep a socket forever. After that
    it lives while a stream uses it; with none left it is closed ``idle_timeout`` later
    (a gRPC client keeps its channel between calls, but not a silent one forever). It is
    closed at once when its last stream ends with `RpcStream.close_connection_when_done`.
    However it ends, its socket is closed.
    """

    def __init__(self, host: str, peer: str, *, unauthenticated_deadline: float,
                 idle_timeout: float) -> None:
        self.host = host
        self.peer = peer
        self.scope = trio.CancelScope(deadline=unauthenticated_deadline)
        # Serving streams, inside `scope`: `close` ends it and leaves the writes queued.
        self.serve_scope = trio.CancelScope()
        self.streams: set[RpcStream] = set()
        self.was_authenticated = False
        self.ended_by_relayd = False  # `close` or `abort`, not a deadline
        self._idle_timeout = idle_timeout

    def close(self) -> None:
        """End the connection once what is queued for it (a stream's status) is written.

        purerpc writes from a task of its own, which `abort` would cancel; the wait for
        it is bounded by `CLOSE_WRITE_SECONDS`.
        """
        self.ended_by_relayd = True
        self.scope.deadline = min(self.scope.deadline,
                                  trio.current_time() + CLOSE_WRITE_SECONDS)
        self.serve_scope.cancel()

    def abort(self) -> None:
        """End the connection now; nothing more is written."""
        self.ended_by_relayd = True
        self.scope.cancel()

    def _stream_started(self, stream: RpcStream) -> None:
        self.streams.add(stream)
        if self.was_authenticated and not self.ended_by_relayd:
            self.scope.deadline = math.inf  # in use again (the stream has its own deadline)

    def _stream_authenticated(self) -> None:
        self.was_authenticated = True
        if not self.ended_by_relayd:
            self.scope.deadline = math.inf

    def _stream_ended(self, stream: RpcStream) -> None:
        self.streams.discard(stream)
        if self.streams or self.ended_by_relayd:
            return
        if stream.closes_connection:
            self.close()
        elif self.was_authenticated:
            self.scope.deadline = trio.current_time() + self._idle_timeout


class RpcStream:
    """One Stream RPC on a `TcpConnection`, as its handler sees it.

    Until `authenticated` the stream has a deadline (the same length as the connection's):
    the ConnectRequest, and the answer to it, are bounded per stream, also on a
    connection where an earlier stream authenticated. When it passes, the stream is
    closed with UNAUTHENTICATED; the connection and its other streams go on.
    """

    def __init__(self, connection: TcpConnection, unauthenticated_deadline: float) -> None:
        self.connection = connection
        self.host = connection.host
        self.peer = connection.peer
        self.scope = trio.CancelScope(deadline=unauthenticated_deadline)
        self.closes_connection = False

    def authenticated(self) -> None:
        self.scope.deadline = math.inf
        self.connection._stream_authenticated()

    def close_connection_when_done(self) -> None:
        """Once this stream has ended, close its TCP connection unless another stream uses it.

        For a stream ended because its peer moved on or went silent: a hub that opened its
        new stream on the same channel keeps the connection; one that left frees its socket.
        """
        self.closes_connection = True


StreamHandler = Callable[[GRPCProtoStream, RpcStream], Awaitable[None]]


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
                 unauthenticated_timeout: float, idle_timeout: float, guard: PeerGuard,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._listen = listen
        self._unauthenticated_timeout = unauthenticated_timeout
        self._idle_timeout = idle_timeout
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
        listener = await anyio.create_tcp_listener(local_host=self._listen.host,
                                                   local_port=self._listen.port)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, trio.open_nursery() as nursery:
            for one in listener.listeners:  # one per address family of the host
                # create_tcp_listener's are SocketListeners; its type says only Listener
                nursery.start_soon(self._accept_forever, cast(anyio.abc.SocketListener, one),
                                   nursery)
            task_status.started(ListenAddress(self._listen.host, port))

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    async def _accept_forever(self, listener: anyio.abc.SocketListener,
                              nursery: trio.Nursery) -> NoReturn:
        """Serve each accepted connection in ``nursery``; wait out running out of resources.

        A shortage is logged when it starts and when it ends, not per failed accept.
        Any other accept error ends the listener (and relayd).
        """
        shortage_since: float | None = None
        failed_accepts = 0
        while True:
            try:
                sock = await listener.accept()
            except (anyio.BrokenResourceError, OSError) as exc:
                code = _accept_errno(exc)
                if code in ACCEPT_SKIP_ERRNOS:
                    continue
                if code is None or code not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                if shortage_since is None:
                    shortage_since = trio.current_time()
                    log.error("grpc listener cannot accept: %s (%s); new connections wait "
                              "until some close, retrying every %gs", errno.errorcode[code],
                              os.strerror(code), ACCEPT_RETRY_SECONDS)
                failed_accepts += 1
                await trio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            if shortage_since is not None:
                log.warning("grpc listener accepting again after %d failed accepts in %.1fs",
                            failed_accepts, trio.current_time() - shortage_since)
                shortage_since, failed_accepts = None, 0
            nursery.start_soon(self._serve_connection, sock)

    async def _serve_connection(self, sock: anyio.abc.SocketStream) -> None:
        host, peer = _peer(sock)
        if not self._guard.admit(host):
            await anyio.aclose_forcefully(sock)
            return
        conn = TcpConnection(
            host, peer,
            unauthenticated_deadline=trio.current_time() + self._unauthenticated_timeout,
            idle_timeout=self._idle_timeout)
        self.connections.add(conn)
        try:
            with conn.scope:
                await self._serve_tcp(sock, conn)
        except Exception as exc:  # the connection boundary: log it, keep serving the rest
            if all(isinstance(leaf, PEER_ERRORS) for leaf in leaves(exc)):
                self._guard.failure(host, "error", "grpc connection closed on error peer=%s "
                                    "error=%s", peer, _describe(exc))
            else:
                log.exception("grpc connection closed by an internal error (not the peer's "
                              "fault) peer=%s", peer)
        else:
            if conn.scope.cancelled_caught and not conn.ended_by_relayd:  # a deadline
                if conn.was_authenticated:
                    log.info("grpc connection closed: no stream for %gs peer=%s",
                             self._idle_timeout, peer)
                else:
                    self._guard.failure(host, "unauthenticated", "grpc connection closed: not "
                                        "authenticated in time peer=%s", peer)
        finally:
            self.connections.discard(conn)
            self._guard.closed(host)

    async def _serve_tcp(self, sock: anyio.abc.SocketStream, conn: TcpConnection) -> None:
        """Serve HTTP/2 (over TLS if configured) until the peer leaves; close the socket.

        Raises what ended the connection; a handler's exception comes inside a group.
        """
        stream: anyio.abc.ByteStream = sock
        try:
            if self._ssl_context is not None:
                # inside the connection's deadline: a stalled handshake is cut too
                stream = await TLSStream.wrap(sock, ssl_context=self._ssl_context,
                                              standard_compatible=False)
            # Leaving the ServerSocket (not cancelled) writes what is still queued.
            async with _purerpc.ServerSocket(self._config, stream) as grpc_socket:
                with conn.serve_scope:
                    async with trio.open_nursery() as nursery:
                        try:
                            async for grpc_stream in grpc_socket.listen():
                                nursery.start_soon(self._serve_stream, grpc_stream, conn)
                        except PEER_ERRORS:
                            raise
                        except Exception as exc:  # from purerpc's parser: see MalformedInput
                            raise MalformedInput(describe(exc)) from exc
                        # The peer closed the TCP connection. purerpc does not tell the
                        # streams, which would wait for messages forever: end them here.
                        nursery.cancel_scope.cancel()
        finally:
            await anyio.aclose_forcefully(stream)

    async def _serve_stream(self, stream: GRPCProtoStream, conn: TcpConnection) -> None:
        """Serve one HTTP/2 stream; its end is its own, not its connection's.

        The peer resetting the stream ends only that stream. Any other exception from the
        handler (other than an RpcFailedError, which becomes the stream's status)
        propagates: it ends the connection, and the connection boundary decides whether it
        was the peer's doing or a bug.
        """
        rpc = RpcStream(conn, trio.current_time() + self._unauthenticated_timeout)
        conn._stream_started(rpc)
        try:
            await self._route(stream, rpc)
        except* (h2.exceptions.StreamClosedError, StreamReset):
            # RST_STREAM from the peer (purerpc does not report it): noticed on our next write.
            log.debug("grpc stream reset by the peer peer=%s stream_id=%d", conn.peer,
                      stream.stream_id)
        finally:
            _purerpc.forget_stream(stream)
            conn._stream_ended(rpc)

    async def _route(self, stream: GRPCProtoStream, rpc: RpcStream) -> None:
        """Route the stream by path; an RpcFailedError from the handler becomes its status."""
        status = Status(StatusCode.OK)
        with rpc.scope:
            await stream.start_response()
            event = await stream.receive_event()
            if not isinstance(event, RequestReceived):
                status = Status(StatusCode.INTERNAL, status_message="expected headers")
            elif (event.service_name, event.method_name) != (SERVICE_NAME, METHOD_NAME):
                status = Status(
                    StatusCode.UNIMPLEMENTED,
                    status_message=f"method {event.service_name}/{event.method_name} is not "
                                   f"implemented"[:200],
                )
            else:
                stream.expect_message_type(pb.StreamRequest)
                try:
                    await self._handler(stream, rpc)
                except* RpcFailedError as group:  # raised in the handler's nursery: grouped
                    status = leaves(group)[0].status  # type: ignore[attr-defined]
        if rpc.scope.cancelled_caught:  # only its deadline cancels it
            self._guard.failure(rpc.host, "unauthenticated", "grpc stream closed: not "
                                "authenticated in time peer=%s", rpc.peer)
            status = Status(StatusCode.UNAUTHENTICATED,
                            status_message="not authenticated in time")
        await _purerpc.close_stream(stream, status)


def _accept_errno(exc: BaseException) -> int | None:
    """The errno of a failed accept (anyio raises BrokenResourceError from the OSError)."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    return cause.errno if isinstance(cause, OSError) else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"[:300]
