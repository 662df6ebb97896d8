"""`H11Connection`: one HTTP/1.1 connection served with h11 and an ASGI app, in one task.

hypercorn serves a request through several layers (protocol wrapper, stream, events, a
task per request with a channel for its body, a send lock, a keep-alive timer task): a
trivial app on it cost 1.0-1.1 ms of CPU per request (1 KiB POSTs, 200/s, one keep-alive
connection, ``bench/asgi_apps.py``), about half of it in those layers. This serves
plain HTTP/1.1 requests the way hypercorn 0.17's ``H11Protocol`` and ``HTTPStream`` do
(the same ASGI scope and messages, the same answers to malformed requests, the same
timers; `relayd.edge._hypercorn` pins their source), with the app awaited in the
connection's own task and the body read from the socket when the app asks for it.

What it does not speak (HTTP/2 with prior knowledge, an ``Upgrade: h2c`` request, a
WebSocket handshake) it hands back to its caller, with the bytes to replay, for
hypercorn to serve.

Differences from hypercorn, none of which an ASGI app can rely on: the response head is
written with the first part of the body (one write, not two); a write is not shielded
from cancellation (a client that stops reading cannot hold up a stop past its grace);
a client that closes while the app works is noticed at the next read, after the answer.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast
from urllib.parse import unquote

import h11
import trio
from hypercorn.config import Config

from relayd.edge._hypercorn import build_and_validate_headers, suppress_body, unexpected_message

__all__ = ["H11Connection"]

# Bytes asked of the socket per read (hypercorn's MAX_RECV).
MAX_RECV = 2**16

DISCONNECT = {"type": "http.disconnect"}

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]],
                Callable[[Message], Awaitable[None]]], Awaitable[None]]


class _Response(enum.Enum):
    """hypercorn's ``ASGIHTTPState``: where the app is in its response."""

    REQUEST = enum.auto()  # nothing sent yet
    RESPONSE = enum.auto()  # started, body under way
    TRAILERS = enum.auto()  # the app announced trailers (which HTTP/1.1 cannot carry)
    CLOSED = enum.auto()  # complete


class H11Connection:
    """Serves the requests of one HTTP/1.1 connection until it should close.

    `serve` returns None when the connection is done (the caller closes it), or the bytes
    to replay into hypercorn when the client asked for a protocol this does not speak.
    """

    def __init__(self, app: App, config: Config, log: logging.Logger, stream: trio.abc.Stream,
                 *, scheme: str, client: tuple[str, int] | None,
                 server: tuple[str, int] | None) -> None:
        self._app = app
        self._config = config
        self._log = log
        self._stream = stream
        self._scheme = scheme
        self._client = client
        self._server = server
        self._state: dict[str, Any] = {}  # the ASGI connection state (no lifespan: empty)
        self._conn = h11.Connection(h11.SERVER,
                                    max_incomplete_event_size=config.h11_max_incomplete_size)
        self._requests = 0
        self._stopping = False
        self._idle_scope: trio.CancelScope | None = None
        # the request in progress
        self._method = ""
        self._response = _Response.REQUEST
        self._status = 0
        self._trailers = False
        self._head = b""  # the response head, written with the first part of the body
        self._body_done = False  # the app got the whole body
        self._reading_over = False  # no more reading: the app is told the client is gone
        self._broken = False  # a write failed: nothing more is written

    def stop_if_idle(self) -> None:
        """Graceful stop: close now if waiting for a request; else after the response."""
        self._stopping = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def serve(self) -> bytes | None:
        while True:
            request = await self._next_request()
            if request is None:
                return None
            replay = self._replay_for_hypercorn(request)
            if replay is not None:
                return replay
            await self._respond(request)
            if not self._recycle():
                return None

    # -- between requests ----------------------------------------------------------------

    async def _next_request(self) -> h11.Request | None:
        """The next request's head, or None: close. hypercorn's keep-alive timer bounds the
        wait from the end of the previous response (or from the start) to a complete
        head; its read timeout bounds each read."""
        config = self._config
        deadline = trio.current_time() + config.keep_alive_timeout
        request = None
        with trio.CancelScope(deadline=deadline) as idle:
            self._idle_scope = idle
            if self._stopping:
                idle.cancel()
            while True:
                try:
                    event = self._conn.next_event()
                except h11.RemoteProtocolError as error:
                    await self._send_error(error.error_status_hint)
                    break
                if type(event) is h11.Request:
                    request = event
                    break
                if event is not h11.NEED_DATA:  # ConnectionClosed: the client is done
                    break
                if config.read_timeout:  # (hypercorn: `read_timeout or inf`)
                    idle.deadline = min(deadline, trio.current_time() + config.read_timeout)
                data = await self._read()
                if data is None:
                    break
                self._conn.receive_data(data)
        self._idle_scope = None
        return request

    def _recycle(self) -> bool:
        """After a response: whether the connection takes another request (hypercorn's
        ``_maybe_recycle``)."""
        conn = self._conn
        if self._broken or self._reading_over:
            return False
        # the rest of a body the app did not read, if it is here already (hypercorn's
        # reading task would have taken it meanwhile)
        while conn.their_state is h11.SEND_BODY:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                break
        if self._stopping or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    def _replay_for_hypercorn(self, request: h11.Request) -> bytes | None:
        """The bytes that make hypercorn see this request again, if hypercorn must serve
        it: HTTP/2 with prior knowledge, an h2c upgrade without a body, a WebSocket
        handshake (hypercorn's ``_check_protocol`` and ``_create_stream``)."""
        trailing = self._conn.trailing_data[0]
        if request.method == b"PRI" and request.target == b"*" and request.http_version == b"2.0":
            return b"PRI * HTTP/2.0\r\n\r\n" + trailing
        upgrade = b""
        connection = b""
        has_body = False
        for name, value in request.headers:
            if name == b"upgrade":
                upgrade = value.strip().lower()
            elif name == b"connection":
                connection = value.strip().lower()
            elif name in (b"content-length", b"transfer-encoding"):
                has_body = True
        websocket = (upgrade == b"websocket" and request.method.upper() == b"GET"
                     and any(token.strip() == b"upgrade" for token in connection.split(b",")))
        if not ((upgrade == b"h2c" and not has_body) or websocket):
            return None
        head = b"%s %s HTTP/%s\r\n" % (request.method, request.target, request.http_version)
        head += b"".join(b"%s: %s\r\n" % pair for pair in request.headers.raw_items())
        return head + b"\r\n" + trailing

    # -- one request ---------------------------------------------------------------------

    async def _respond(self, request: h11.Request) -> None:
        """Run the app on ``request`` (hypercorn's ``HTTPStream`` and ``_handle``)."""
        config = self._config
        self._requests += 1
        self._method = request.method.decode("ascii").upper()
        self._response = _Response.REQUEST
        self._body_done = False
        self._head = b""
        if self._conn.they_are_waiting_for_100_continue:  # hypercorn answers it at once
            await self._send_h11(h11.InformationalResponse(
                status_code=100, headers=config.response_headers("h11")))
        path, _, query_string = request.target.partition(b"?")
        scope = {
            "type": "http",
            "http_version": request.http_version.decode(),
            "asgi": {"spec_version": "2.1", "version": "3.0"},  # as hypercorn 0.17 declares
            "method": self._method,
            "scheme": self._scheme,
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query_string,
            "root_path": config.root_path,
            "headers": list(request.headers),
            "client": self._client,
            "server": self._server,
            "state": self._state,
            "extensions": {},
        }
        try:
            await self._app(scope, self._receive, self._send)
        except BaseExceptionGroup as error:
            if error.split(trio.Cancelled)[1] is None:
                raise
            self._log.exception("Error in ASGI Framework")
        except trio.Cancelled:
            raise
        except Exception:
            self._log.exception("Error in ASGI Framework")
        if self._response is _Response.REQUEST and not self._reading_over:
            await self._send_error(500)  # the app answered nothing
        elif self._head:  # started, no body: what was started is sent
            await self._write(self._head)

    async def _receive(self) -> Message:
        """The ASGI ``receive``: the body as it comes, then a disconnect once the client
        has gone."""
        conn = self._conn
        while not self._reading_over:
            if self._body_done:
                # the whole body was given: wait for the client to leave (what arrives
                # meanwhile is the next request, kept for later)
                data = await self._read_in_request()
                if not data:
                    break
                conn.receive_data(data)
                continue
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                await self._send_error(error.error_status_hint)
                break
            if type(event) is h11.Data:
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            if type(event) is h11.EndOfMessage:
                self._body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if event is not h11.NEED_DATA:
                break
            data = await self._read_in_request()
            if data is not None:
                conn.receive_data(data)
        self._reading_over = True
        return dict(DISCONNECT)

    async def _send(self, message: Message) -> None:
        """The ASGI ``send`` (hypercorn's ``HTTPStream.app_send`` and
        ``H11Protocol.stream_send``)."""
        kind = message["type"]
        if kind == "http.response.start" and self._response is _Response.REQUEST:
            headers = build_and_validate_headers(message.get("headers", []))
            status = int(message["status"])
            headers.extend(self._config.response_headers("h11"))
            if status >= 200:
                if self._requests >= self._config.keep_alive_max_requests:
                    headers.append((b"connection", b"close"))
                self._head = self._h11_bytes(h11.Response(headers=headers, status_code=status))
            else:
                await self._send_h11(h11.InformationalResponse(headers=headers,
                                                               status_code=status))
            self._status = status
            self._trailers = bool(message.get("trailers", False))
            self._response = _Response.RESPONSE
        elif kind == "http.response.body" and self._response is _Response.RESPONSE:
            data, self._head = self._head, b""
            body = message.get("body", b"")
            if body != b"" and not suppress_body(self._method, self._status):
                data += self._h11_bytes(h11.Data(data=bytes(body)))
            if not message.get("more_body", False):
                if self._trailers:
                    self._response = _Response.TRAILERS
                else:
                    data += self._h11_bytes(h11.EndOfMessage())
                    self._response = _Response.CLOSED
            if data:
                await self._write(data)
        else:
            raise unexpected_message(self._response, kind)

    # -- the wire ------------------------------------------------------------------------

    async def _send_error(self, status: int) -> None:
        """A bodiless error answer, then the connection closes (hypercorn's
        ``_send_error_response``); nothing if a response is already under way."""
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [(b"content-length", b"0"), (b"connection", b"close"),
                   *self._config.response_headers("h11")]
        data = self._h11_bytes(h11.Response(status_code=status, headers=headers))
        await self._write(data + self._h11_bytes(h11.EndOfMessage()))
        self._reading_over = True

    def _h11_bytes(self, event: h11.Response | h11.InformationalResponse | h11.Data
                   | h11.EndOfMessage) -> bytes:
        """``event`` serialised; nothing once the client broke the protocol (hypercorn's
        ``_send_h11_event``)."""
        try:
            return self._conn.send(event) or b""
        except h11.LocalProtocolError:
            if self._conn.their_state is not h11.ERROR:
                raise
            return b""

    async def _send_h11(self, event: h11.InformationalResponse) -> None:
        data = self._h11_bytes(event)
        if data:
            await self._write(data)

    async def _write(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._broken = self._reading_over = True

    async def _read(self) -> bytes | None:
        """What the client sent next (b"" at its end), or None when reading failed."""
        try:
            # (typed bytes | bytearray; sockets and TLS give bytes, and h11 takes either)
            return cast(bytes, await self._stream.receive_some(MAX_RECV))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None

    async def _read_in_request(self) -> bytes | None:
        """`_read` bounded by the read timeout; when reading failed or timed out, None,
        and the app is told the client has gone."""
        with trio.move_on_after(self._config.read_timeout or math.inf) as read:
            data = await self._read()
        if read.cancelled_caught or data is None:
            self._reading_over = True
            return None
        return data
