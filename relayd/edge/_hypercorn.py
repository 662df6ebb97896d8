"""Every use of hypercorn's private API, in one place (checked against hypercorn 0.17.3).

hypercorn's public entry point, `hypercorn.trio.serve`, creates its listeners and runs
the accept loop itself, with no limit on the connections it takes. relayd runs the accept
loop (`relayd.edge.http`) so it can bound them, and hands each accepted stream to the
per-connection server that ``serve`` uses inside (``hypercorn/trio/run.py``,
``worker_serve``: ``TCPServer(app, config, context, state, stream)``), with one fix (see
`_TCPServer`). Used: ``hypercorn.trio.tcp_server.TCPServer`` (constructor, ``_read_data``,
``idle_task``), ``hypercorn.trio.worker_context.WorkerContext`` (``terminated``) and
``hypercorn.utils.wrap_app``.

`HYPERCORN_VERSION` and `RELIED_SOURCE_SHA256` record what this was written against;
``tests/test_hypercorn_guard.py`` fails when the installed hypercorn differs, so an
upgrade is a conscious act: re-read the code named above (and ``worker_serve``, which
`relayd.edge.http.serve_http` stands in for), adapt, then update the hashes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from relayd.common.runner import describe

__all__ = ["HYPERCORN_VERSION", "RELIED_SOURCE_SHA256", "HypercornConnections"]

log = logging.getLogger(__name__)

# At most one log line per this many seconds about connections hypercorn could not parse.
PARSE_ERROR_LOG_SECONDS = 10.0

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
}


class _TCPServer(TCPServer):
    """hypercorn 0.17's connection server, which closes a connection when its client does.

    When a client closes an idle connection (before its first request, or between
    requests of a keep-alive connection), hypercorn's ``TCPServer`` stops reading but
    keeps waiting for its keep-alive timer, so the socket sits in CLOSE-WAIT, holding a
    descriptor and one of the listener's connection slots, for up to
    ``keep_alive_timeout``. The timer has nothing left to guard once the peer has
    closed: stop it, and the connection ends at once.
    """

    async def _read_data(self) -> None:
        await super()._read_data()  # returns at end of stream, or on a read error/timeout
        await self.idle_task.stop()


class HypercornConnections:
    """Serves accepted connections with hypercorn's HTTP/1.1 and h2 protocol code.

    A `trio.SSLStream` is served as HTTPS, with the protocol chosen by ALPN (hypercorn's
    ``TCPServer`` does the handshake); a plain stream as HTTP/1.1 (or h2c upgrade).

    The ASGI lifespan protocol is not run: relayd's apps have nothing to start or stop.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], config: Config, name: str) -> None:
        self._name = name
        self._parse_errors = 0
        self._next_parse_error_log = -math.inf
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        # max_requests=None: the worker never asks to be restarted
        self._context = WorkerContext(None)

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes; whatever ends it stays inside it.

        OSErrors end it quietly (hypercorn's choice); an app's exception is answered 500 by
        hypercorn. What is left is hypercorn failing on what the client sent (e.g. an
        HTTP/2 ``:path`` that is not ASCII raises UnicodeDecodeError in its parser): that
        closes this connection, is logged (at most once per `PARSE_ERROR_LOG_SECONDS`,
        with a count) and never reaches the listener.
        """
        state: dict[str, Any] = {}
        try:
            await _TCPServer(self._app, self._config, self._context, ConnectionState(state),
                             stream)
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
        await self._context.terminated.set()
