"""Every use of hypercorn's private API, in one place (checked against hypercorn 0.17.3).

hypercorn's public entry point, `hypercorn.trio.serve`, creates its listeners and runs
the accept loop itself, with no limit on the connections it takes. relayd runs the accept
loop (`relayd.edge.http`) so it can bound them, serves HTTP/1.1 itself
(`relayd.edge.http11`, which mirrors hypercorn's ``H11Protocol``, ``HTTPStream`` and
``_handle``), and hands the rest (HTTP/2, h2c, WebSocket) to `HypercornServer`: the
per-connection server that ``serve`` uses inside (``hypercorn/trio/run.py``,
``worker_serve``: ``TCPServer(app, config, context, state, stream)``), with one fix and
two savings of CPU per request (see `_TCPServer`, `HypercornConfig`).

Used: ``hypercorn.trio.tcp_server.TCPServer`` (constructor, ``run``'s one call of
``idle_task.restart``, ``protocol_send``, ``_read_data``, ``_initiate_server_close``,
``send_lock``, and how ``run`` tells TLS from plain streams), ``WorkerContext``
(``terminated``), ``TrioSingleTask`` (the timer `_IdleTimer` stands in for),
``TaskGroup.spawn``, ``Config.response_headers``, the ``Updated`` and ``RawData`` events
as ``H11Protocol`` and ``H2Protocol`` send them, ``ProtocolWrapper`` (a replayed request
switches to h2 as the original would have), ``hypercorn.utils``' ``wrap_app``,
``build_and_validate_headers``, ``suppress_body``, ``parse_socket_addr`` and
``UnexpectedMessageError``.

`HYPERCORN_VERSION` and `RELIED_SOURCE_SHA256` record what this was written against;
``tests/test_hypercorn_guard.py`` fails when the installed hypercorn differs, so an
upgrade is a conscious act: re-read the code named above (and ``worker_serve``, which
`relayd.edge.http.serve_http` stands in for, and ``H11Protocol``, ``HTTPStream`` and
``_handle``, which `relayd.edge.http11` stands in for), adapt, then update the hashes.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState
from hypercorn.utils import (
    UnexpectedMessageError,
    build_and_validate_headers,
    parse_socket_addr,
    suppress_body,
    wrap_app,
)

__all__ = ["HYPERCORN_VERSION", "RELIED_SOURCE_SHA256", "HypercornConfig", "HypercornServer",
           "build_and_validate_headers", "parse_socket_addr", "suppress_body",
           "unexpected_message"]

# The hypercorn release this module was written against (pinned in pyproject.toml).
HYPERCORN_VERSION = "0.17.3"
# sha256 of the source of what this module uses or stands in for.
RELIED_SOURCE_SHA256 = {
    "hypercorn.trio.tcp_server.TCPServer":
        "6c26a397576635876b732485ab0d1ded80e630cc811d0349ca10289a76cc9cf2",
    "hypercorn.trio.worker_context.WorkerContext":
        "0275ca0aa6cf7efa4e43896da9e731cc9ff8c2d6ac09d0326182780728231240",
    "hypercorn.trio.run.worker_serve":
        "22efe0285dc01572d27169c7c559b48e2404dfb33f602371ce57e2bf7cfcb682",
    "hypercorn.utils.wrap_app":
        "d1305c80ef0434e96667fe528b03a0ba7ed28432506cf424d129905d7c10b64b",
    "hypercorn.trio.worker_context.TrioSingleTask":
        "a28bb4b4588cca09c0bb83964d992c7e9f47acfa9ed3cf6f15d807eb0af6a294",
    "hypercorn.trio.task_group.TaskGroup":
        "f2df3de4d7484e2b612c91a62472a4bd2d40f39ad02634e8621d9861fe2f99cb",
    "hypercorn.config.Config":
        "3de7283e127e2a45df13bb1c4a2fa3c27731e529436bfeac40ac52589564feb6",
    "hypercorn.protocol.h11.H11Protocol":
        "b2318d0db5968dec4162e6c1e4cb693f202d66d384163362af7f23fe4024000b",
    "hypercorn.protocol.h2.H2Protocol":
        "4292edf651823f919a9a307c239c2dc3f89735cb29977b58131ce14199570865",
    "hypercorn.protocol.http_stream.HTTPStream":
        "21e8072ec5cca4ac51f95ad4349998ee7c3ee4148cfa3c156bfce51943ca66d0",
    "hypercorn.trio.task_group._handle":
        "fc19d11b0ff5f71cade5af4dd702c91c8aa3ec8c653127348fac1fb9b0e95141",
    "hypercorn.protocol.ProtocolWrapper":
        "627b82d1b79aa0de9b0ebaeffcc4b25e66d0613ee333ef9283bb9080b3926bf1",
    "hypercorn.utils.build_and_validate_headers":
        "47e3e22d0746e3b1e4342684f93d15b7f4b0eccd736d6c35be519b3999965bdb",
    "hypercorn.utils.suppress_body":
        "21eb6cd69f3c0cd7472120485b20e0fe38b686ff4b1a83d271e7f39c0e8be4a0",
    "hypercorn.utils.parse_socket_addr":
        "47c8eeadb7e1667d39c60d6cad4e9889252a2cb5014866515aa922392a349e04",
    "hypercorn.utils.UnexpectedMessageError":
        "63f04cf1e0100a61f2bf751362883a85730607aa0c7c53e7cb4df824ae0ed3fc",
}


class HypercornConfig(Config):
    """hypercorn's ``Config`` with the headers it adds to every response built once a second.

    ``Config.response_headers`` formats the Date header (``wsgiref``'s
    ``format_date_time``) for every response; it only changes once a second.
    """

    def __init__(self) -> None:
        super().__init__()
        self._response_headers: dict[str, tuple[int, list[tuple[bytes, bytes]]]] = {}

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        second = int(time.time())  # what the Date header shows (format_date_time truncates)
        cached = self._response_headers.get(protocol)
        if cached is None or cached[0] != second:
            cached = self._response_headers[protocol] = (
                second, super().response_headers(protocol))
        return list(cached[1])  # a copy: callers may extend it


class _IdleTimer:
    """hypercorn's keep-alive timer as one task per connection whose deadline moves.

    hypercorn's ``TrioSingleTask`` starts a timer task (through ``nursery.start``) each time
    a connection becomes idle and cancels it when the next request arrives: two task
    starts, a cancellation and a lock per request, about a fifth of the CPU its HTTP/1.1
    path spends on a request. Here one task waits for the whole connection, in a cancel
    scope whose deadline is ``keep_alive_timeout`` after the connection last became idle,
    and infinite while it is busy. It closes the connection as hypercorn's
    ``TCPServer._idle_timeout`` does when the deadline passes, or when the server is
    terminated while (or once) the connection is idle.
    """

    def __init__(self, server: _TCPServer) -> None:
        self._server = server
        self._scope = trio.CancelScope()
        self._started = False
        self._idle = False
        self._stopped = False

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]
                      ) -> None:
        """``TrioSingleTask.restart``, which ``TCPServer.run`` calls once before reading:
        start the timer task, idle."""
        if not self._started:
            self._started = True
            task_group.spawn(self._run)
        self.idle()

    def idle(self) -> None:
        if self._stopped:
            return
        self._idle = True
        if self._server.context.terminated.is_set():
            self._scope.deadline = -math.inf
        else:
            self._scope.deadline = trio.current_time() + self._server.config.keep_alive_timeout

    def busy(self) -> None:
        self._idle = False
        self._scope.deadline = math.inf

    async def stop(self) -> None:
        """End the timer for good (the connection is ending)."""
        self._stopped = True
        self._scope.cancel()

    async def _run(self) -> None:
        with self._scope:
            await self._server.context.terminated.wait()
            if not self._idle:  # a request is in progress: it ends by itself
                await trio.sleep_forever()
        if not self._stopped:
            # hypercorn's TCPServer._idle_timeout, after its wait
            with trio.CancelScope(shield=True):
                await self._server._initiate_server_close()


class _TCPServer(TCPServer):
    """hypercorn 0.17's connection server, which closes a connection when its client does,
    and spends less per request.

    When a client closes an idle connection (before its first request, or between
    requests of a keep-alive connection), hypercorn's ``TCPServer`` stops reading but
    keeps waiting for its keep-alive timer, so the socket sits in CLOSE-WAIT, holding a
    descriptor and one of the listener's connection slots, for up to
    ``keep_alive_timeout``. The timer has nothing left to guard once the peer has
    closed: stop it, and the connection ends at once.

    The keep-alive timer is `_IdleTimer`; `protocol_send` is hypercorn's with two
    shortcuts on the path every response takes (see there).
    """

    def __init__(self, app: AppWrapper, config: Config, context: WorkerContext,
                 state: ConnectionState, stream: trio.abc.Stream) -> None:
        super().__init__(app, config, context, state, stream)
        self._idle_timer = _IdleTimer(self)
        self.idle_task = self._idle_timer  # type: ignore[assignment]

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            if not event.data:
                # h11's end of a body with a content-length: nothing to write (hypercorn
                # would still take the lock and yield to the scheduler)
                return
            # the lock orders writes from the reading task and the app's task; taking it
            # without a checkpoint when it is free saves a pass through the scheduler
            try:
                self.send_lock.acquire_nowait()
            except trio.WouldBlock:
                await self.send_lock.acquire()
            try:
                # shielded as in hypercorn: a write cut in the middle would corrupt the stream
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
            finally:
                self.send_lock.release()
        elif isinstance(event, Updated):
            if event.idle:
                self._idle_timer.idle()
            else:
                self._idle_timer.busy()
        else:
            await super().protocol_send(event)

    async def _read_data(self) -> None:
        await super()._read_data()  # returns at end of stream, or on a read error/timeout
        await self._idle_timer.stop()


class _Replayed(trio.abc.Stream):
    """``stream`` whose first bytes received are ``replay`` (read from it already).

    Every other attribute is the stream's own, so hypercorn's ``TCPServer`` tells plain
    from TLS as it does (``do_handshake``, ``socket``, ``transport_stream``...).
    """

    def __init__(self, stream: trio.abc.Stream, replay: bytes) -> None:
        self._stream = stream
        self._replay = replay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._replay:
            return await self._stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._replay) if max_bytes is None else max_bytes
        data, self._replay = self._replay[:size], self._replay[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class HypercornServer:
    """Serves connections with hypercorn's HTTP/1.1 and h2 protocol code.

    A `trio.SSLStream` is served as HTTPS, with the protocol chosen by ALPN (hypercorn's
    ``TCPServer`` does the handshake, or finds it done); a plain stream as HTTP/1.1 (or
    h2 with prior knowledge, or an h2c upgrade).

    The ASGI lifespan protocol is not run: relayd's apps have nothing to start or stop.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], config: Config) -> None:
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        # max_requests=None: the worker never asks to be restarted
        self._context = WorkerContext(None)

    async def serve(self, stream: trio.abc.Stream, replay: bytes = b"") -> None:
        """Serve one connection until it closes, and close it; ``replay``: what was read
        from it already, for hypercorn to read first.

        OSErrors end it quietly (hypercorn's choice); an app's exception is answered 500
        by hypercorn. hypercorn failing on what the client sent (e.g. an HTTP/2 ``:path``
        that is not ASCII raises UnicodeDecodeError in its parser) raises.
        """
        if replay:
            stream = _Replayed(stream, replay)
        state: dict[str, Any] = {}
        await _TCPServer(self._app, self._config, self._context, ConnectionState(state), stream)

    async def stop_idle(self) -> None:
        """Graceful stop: idle keep-alive connections close; requests in progress finish
        and their connections close after the response."""
        await self._context.terminated.set()


def unexpected_message(state: enum.Enum, message_type: str) -> Exception:
    """The error hypercorn raises to an app that sends ``message_type`` out of turn."""
    return UnexpectedMessageError(state, message_type)
