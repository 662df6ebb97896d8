"""`HTTPConnections`: which server speaks HTTP on each accepted connection.

HTTP/1.1 (plain, or TLS with ALPN ``http/1.1`` or none) is served by relayd's own
`H11Connection`, which spends a fraction of hypercorn's CPU per request; HTTP/2 (ALPN
``h2``, prior knowledge, an h2c upgrade) and WebSocket handshakes by hypercorn
(`relayd.edge._hypercorn`), which takes over a connection with the bytes read from it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config

from relayd.common.runner import describe
from relayd.edge._hypercorn import HypercornServer, parse_socket_addr
from relayd.edge.http11 import H11Connection

__all__ = ["HTTPConnections"]

log = logging.getLogger(__name__)

# At most one log line per this many seconds about connections the server could not handle.
PARSE_ERROR_LOG_SECONDS = 10.0


class HTTPConnections:
    """Serves accepted connections with ``app``, and stops them gracefully.

    The ASGI lifespan protocol is not run: relayd's apps have nothing to start or stop.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], config: Config, name: str) -> None:
        self._app = app
        self._config = config
        self._name = name
        # where hypercorn logs an app's errors (serve_http sets it)
        assert isinstance(config.errorlog, logging.Logger), config.errorlog
        self._app_log = config.errorlog
        self._hypercorn = HypercornServer(app, config)
        self._http11: set[H11Connection] = set()
        self._stopping = False
        self._parse_errors = 0
        self._next_parse_error_log = -math.inf

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes; whatever ends it stays inside it.

        OSErrors end it quietly (hypercorn's choice); an app's exception is logged and
        answered 500. What is left is the server failing on what the client sent (e.g. an
        HTTP/2 ``:path`` that is not ASCII raises UnicodeDecodeError in hypercorn's
        parser): that closes this connection, is logged (at most once per
        `PARSE_ERROR_LOG_SECONDS`, with a count) and never reaches the listener.
        """
        try:
            if isinstance(stream, trio.SSLStream):
                # hypercorn's TCPServer.run: the handshake bounded, a failed one ends quietly
                try:
                    with trio.fail_after(self._config.ssl_handshake_timeout):
                        await stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    await trio.aclose_forcefully(stream)
                    return
                if stream.selected_alpn_protocol() == "h2":
                    await self._hypercorn.serve(stream)
                    return
            replay = await self._serve_http11(stream)
            if replay is not None:
                await self._hypercorn.serve(stream, replay)
        except Exception as exc:
            self._parse_errors += 1
            now = trio.current_time()
            if now >= self._next_parse_error_log:
                self._next_parse_error_log = now + PARSE_ERROR_LOG_SECONDS
                log.warning("%s connection closed: the HTTP server could not handle what the "
                            "client sent (%s; %d such connections so far)",
                            self._name, describe(exc), self._parse_errors)

    async def stop_idle(self) -> None:
        """Graceful stop: idle keep-alive connections close; requests in progress finish
        and their connections close after the response."""
        self._stopping = True
        for connection in list(self._http11):
            connection.stop_if_idle()
        await self._hypercorn.stop_idle()

    async def _serve_http11(self, stream: trio.abc.Stream) -> bytes | None:
        """Serve HTTP/1.1 until the connection ends (closing it), or return what hypercorn
        must read to take it over."""
        replay = None
        try:
            sock = _socket_of(stream)
            connection = H11Connection(
                self._app, self._config, self._app_log, stream,
                scheme="https" if isinstance(stream, trio.SSLStream) else "http",
                client=parse_socket_addr(sock.family, sock.getpeername()),
                server=parse_socket_addr(sock.family, sock.getsockname()))
            self._http11.add(connection)
            try:
                if self._stopping:
                    connection.stop_if_idle()
                replay = await connection.serve()
            finally:
                self._http11.discard(connection)
        except OSError:
            pass
        finally:
            if replay is None:
                await _close(stream)
        return replay


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream), stream  # what serve_bounded accepts
    return stream.socket


async def _close(stream: trio.abc.Stream) -> None:
    """hypercorn's ``TCPServer._close``: end of stream first where there is one, then close."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError):
            pass
    await stream.aclose()
