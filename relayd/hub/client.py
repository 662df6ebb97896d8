"""HTTP/1.1 to the destinations over keep-alive connections, for one request at a time each.

A delivery is one request and its answer, and relay-hub's CPU per webhook is what this
module is about: a general-purpose client (httpx: Request and Response objects, auth,
cookies, redirects, URL normalisation, a timeout and an exception mapping around every
socket operation, its connection pool's bookkeeping) spent most of it. Here h11 (the
HTTP/1.1 state machine httpx uses underneath) runs on trio streams, and only what a
delivery needs is done:

- the request, head and body, goes in one write; the answer's head is parsed and its
  body read and dropped, so that the connection can carry the next request;
- a connection left reusable by the exchange waits in an idle list for the next request
  to its origin (the most recently used first); one idle for `KEEPALIVE_SECONDS` or
  more, or one the server has closed (readable while idle), is closed instead; at most
  ``max_idle`` wait, the oldest closed first;
- a request that fails or is cancelled (the delivery deadline is a cancel scope at the
  caller) closes its connection: its state is unknown.

How many requests run at once is the caller's limit (relay-hub's
``max_concurrent_deliveries``), so that is also how many connections are open, plus
``max_idle`` at most.

Errors are raised as httpx's exception types, so what the edge records about a failed
delivery reads as it did when httpx sent it: `httpx.ConnectError` (refused, unreachable,
name resolution, TLS handshake), `httpx.ReadError`, `httpx.RemoteProtocolError` (a
malformed answer, or the connection closed before a complete one),
`httpx.LocalProtocolError` (a request h11 refuses to write, e.g. a header value with a
newline). As with httpx, a failed write is not an error by itself: the server may have
answered before closing (a 413 to a large body), so the answer is read all the same.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from types import TracebackType

import h11
import httpx
import trio

__all__ = ["KEEPALIVE_SECONDS", "Answer", "DeliveryClient", "Origin"]

# An idle connection this old is closed rather than reused: servers close their own after
# a while (Node's default is 5 s), and a request racing that close fails. httpx's default.
KEEPALIVE_SECONDS = 5.0
# Largest answer head (status line and headers) accepted: httpcore's limit.
MAX_HEAD_BYTES = 100 * 1024
# Bytes asked of the socket per read.
RECEIVE_BYTES = 64 * 1024
# The error when the connection closed before an answer began (httpcore's words).
NO_ANSWER = "Server disconnected without sending a response."


@dataclass(frozen=True)
class Origin:
    """Where a connection goes: requests to the same origin share connections."""

    scheme: str  # "http" or "https"
    host: str  # a name or an address (IPv6 without brackets), as connected to
    port: int


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str


def _why(exc: BaseException) -> str:
    """The message of a trio stream error: the OSError or SSLError under it, if any."""
    return str(exc.__cause__ or exc) or type(exc.__cause__ or exc).__name__


class _Connection:
    """One HTTP/1.1 connection: requests one after another, each answered before the next."""

    def __init__(self, origin: Origin, stream: trio.abc.Stream,
                 socket_stream: trio.SocketStream) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self._stream = stream
        self._socket = socket_stream.socket
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)

    def closed_by_server(self) -> bool:
        """While idle nothing is due from the server: anything readable is its close."""
        return self._socket.is_readable()

    def start_next_cycle(self) -> bool:
        """Ready the connection for the next request; False if it cannot carry one."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        """Close at once, TLS or not: nothing more is sent (as trio.aclose_forcefully does),
        and no checkpoint, so that a cancelled caller closes every connection it holds."""
        self._socket.close()

    async def request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> Answer:
        try:
            events: list[h11.Event] = [
                h11.Request(method=method, target=target, headers=headers)]
            if body:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            data = b"".join(self._h11.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # the answer may be there all the same (see the module docstring)
        head = await self._next_event()
        while isinstance(head, h11.InformationalResponse):  # 100 Continue and the like
            head = await self._next_event()
        if not isinstance(head, h11.Response):
            raise httpx.RemoteProtocolError(f"expected an answer, got {head!r}")
        while not isinstance(event := await self._next_event(), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                raise httpx.RemoteProtocolError(f"expected the answer's body, got {event!r}")
        return Answer(head.status_code, head.reason.decode("ascii", errors="ignore"))

    async def _next_event(self) -> object:
        try:
            while (event := self._h11.next_event()) is h11.NEED_DATA:
                try:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                except trio.BrokenResourceError as exc:
                    raise httpx.ReadError(_why(exc)) from exc
                if not data and self._h11.their_state is h11.SEND_RESPONSE:
                    raise httpx.RemoteProtocolError(NO_ANSWER)
                # (bytes() of bytes is the same object; SSLStream's type says bytearray too)
                self._h11.receive_data(bytes(data))  # b"": closed; h11 judges the body
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        return event


class DeliveryClient:
    """Keep-alive HTTP/1.1 connections to the destinations; see the module docstring.

    ``ssl_context`` verifies https destinations (by default httpx's: certifi's CAs, or
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``). Use as a context manager, or call `close`, to
    close the idle connections (closing needs no checkpoint: a cancelled caller can).
    """

    def __init__(self, *, max_idle: int, ssl_context: ssl.SSLContext | None = None,
                 keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self._max_idle = max_idle
        self._ssl_context = ssl_context
        self._keepalive_seconds = keepalive_seconds
        self._idle: list[_Connection] = []  # the most recently used last

    def __enter__(self) -> DeliveryClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def request(self, origin: Origin, method: bytes, target: bytes,
                      headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        """Send one request to ``origin`` (``headers`` complete: Host, framing) and read
        its answer. Raises httpx's errors (see the module docstring)."""
        connection = self._take_idle(origin) or await self._connect(origin)
        try:
            answer = await connection.request(method, target, headers, body)
        except BaseException:
            connection.close()
            raise
        if connection.start_next_cycle():
            self._put_idle(connection)
        else:
            connection.close()
        return answer

    def _take_idle(self, origin: Origin) -> _Connection | None:
        now = trio.current_time()
        # oldest first: those idle too long are closed, whatever their origin
        while self._idle and now - self._idle[0].idle_since >= self._keepalive_seconds:
            self._idle.pop(0).close()
        for i in range(len(self._idle) - 1, -1, -1):
            if self._idle[i].origin == origin:
                connection = self._idle.pop(i)
                if not connection.closed_by_server():
                    return connection
                connection.close()
        return None

    def _put_idle(self, connection: _Connection) -> None:
        connection.idle_since = trio.current_time()
        self._idle.append(connection)
        if len(self._idle) > self._max_idle:
            self._idle.pop(0).close()

    async def _connect(self, origin: Origin) -> _Connection:
        try:
            socket_stream = await trio.open_tcp_stream(origin.host, origin.port)
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        if origin.scheme != "https":
            return _Connection(origin, socket_stream, socket_stream)
        tls = trio.SSLStream(socket_stream, self._tls_context(), server_hostname=origin.host,
                             https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException as exc:
            socket_stream.socket.close()
            if isinstance(exc, trio.BrokenResourceError):
                raise httpx.ConnectError(_why(exc)) from exc
            raise
        return _Connection(origin, tls, socket_stream)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # made on first use: loading the CAs takes a while
            self._ssl_context = httpx.create_ssl_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context
