"""Serving small ASGI apps on trio, and the bits of ASGI they share.

relayd runs the accept loop itself (`relayd.edge.bounded`: trio's ``serve_listeners``
with a cap on open connections); hypercorn's own ``serve`` accepts without limit. On each
accepted connection `relayd.edge.http_connections` speaks HTTP: HTTP/1.1 itself, HTTP/2
through hypercorn (with hypercorn's settings, from its ``Config``). With TLS, each
accepted connection is wrapped as hypercorn's ``serve`` does (an ``SSLListener`` with
``https_compatible=True``), but with the context current at that moment, so a reloaded
certificate applies to new connections only.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from relayd.common.asgi import Receive, Scope, Send, handle_lifespan
from relayd.edge._hypercorn import HypercornConfig
from relayd.edge.bounded import serve_bounded
from relayd.edge.config import IngressConfig, ListenAddress
from relayd.edge.http_connections import HTTPConnections

__all__ = ["Receive", "Scope", "Send", "handle_lifespan", "send_json", "serve_http"]


# Pending TCP connections the kernel queues before relayd accepts them (hypercorn's default
# of 100 resets connections during a burst of webhooks); connections over the listener's
# max_connections wait here too.
LISTEN_BACKLOG = 1024


async def serve_http(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    listen: ListenAddress,
    *,
    name: str,
    shutdown_trigger: Callable[[], Awaitable[None]],
    graceful_seconds: float,
    max_connections: int = IngressConfig.max_connections,
    read_timeout: float = IngressConfig.read_timeout,
    # idle keep-alive connections, and requests whose headers are still incomplete
    # (the idle timer runs until the headers are parsed), are closed after this
    keep_alive_timeout: float = IngressConfig.header_timeout,
    # HTTPS: the context for a connection accepted now (None: plain HTTP)
    tls_context: Callable[[], ssl.SSLContext] | None = None,
    task_status: trio.TaskStatus[ListenAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``app`` on ``listen`` until ``shutdown_trigger`` returns; report the bound address.

    At most ``max_connections`` connections are open at once; beyond that, new ones wait
    in the listen backlog. On shutdown the listener closes at once, idle connections
    close, and requests in progress get ``graceful_seconds`` to finish before they are
    cancelled. With ``tls_context``, the TLS handshake must end within
    ``keep_alive_timeout`` (it counts as the start of the first request's headers).
    """
    config = HypercornConfig()
    config.bind = [str(listen)]
    config.accesslog = None
    config.errorlog = logging.getLogger(f"relayd.{name}")
    config.keep_alive_timeout = keep_alive_timeout
    config.read_timeout = read_timeout  # type: ignore[assignment]
    config.include_server_header = False
    config.ssl_handshake_timeout = keep_alive_timeout
    # hypercorn's socket set-up, so the address means what it meant (e.g. "[::]" is
    # dual-stack); hypercorn's config has no TLS (relayd wraps the connections itself),
    # so these are its "insecure" sockets and there are no QUIC ones
    listeners: list[trio.SocketListener] = []
    for sock in config.create_sockets().insecure_sockets:
        sock.listen(LISTEN_BACKLOG)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    try:
        connections = HTTPConnections(app, config, name)
        handler: Callable[[trio.SocketStream], Awaitable[None]] = connections.serve
        if tls_context is not None:
            handler = partial(_serve_tls, connections.serve, tls_context)
        bound = ListenAddress(listen.host, int(listeners[0].socket.getsockname()[1]))
        async with trio.open_nursery() as connection_nursery:
            async with trio.open_nursery() as accept_nursery:
                await accept_nursery.start(partial(serve_bounded, handler, listeners,
                                                   max_connections=max_connections,
                                                   handler_nursery=connection_nursery))
                task_status.started(bound)
                await shutdown_trigger()
                accept_nursery.cancel_scope.cancel()  # new connections are refused from now
            await connections.stop_idle()
            connection_nursery.cancel_scope.deadline = trio.current_time() + graceful_seconds
    finally:
        for listener in listeners:  # (serve_bounded closes them too: closing twice is fine)
            await trio.aclose_forcefully(listener)


async def _serve_tls(serve: Callable[[trio.abc.Stream], Awaitable[None]],
                     tls_context: Callable[[], ssl.SSLContext],
                     stream: trio.SocketStream) -> None:
    # HTTPConnections runs the handshake (bounded by ssl_handshake_timeout) and reads the
    # negotiated ALPN protocol; https_compatible: clients that close without TLS's
    # close_notify (most HTTPS clients) are not an error
    await serve(trio.SSLStream(stream, tls_context(), server_side=True,
                               https_compatible=True))


async def send_json(send: Send, status: int, body: Any,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": data})
