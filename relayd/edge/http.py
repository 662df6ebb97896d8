"""Serving small ASGI apps with hypercorn on trio, and the bits of ASGI they share."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from relayd.edge.config import ListenAddress

__all__ = ["Receive", "Scope", "Send", "handle_lifespan", "send_json", "serve_http"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Idle keep-alive connections, and requests whose headers are still incomplete (hypercorn's
# idle timer runs until the headers are parsed: slow headers), are closed after this long.
KEEP_ALIVE_SECONDS = 5.0
# Pending TCP connections the kernel queues before relayd accepts them (hypercorn's default
# of 100 resets connections during a burst of webhooks).
LISTEN_BACKLOG = 1024
# A request whose headers or body stall for this long is dropped (slow clients).
READ_TIMEOUT_SECONDS = 30.0


async def serve_http(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    listen: ListenAddress,
    *,
    name: str,
    shutdown_trigger: Callable[[], Awaitable[None]],
    graceful_seconds: float,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    keep_alive_timeout: float = KEEP_ALIVE_SECONDS,
    task_status: trio.TaskStatus[ListenAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``app`` on ``listen`` until ``shutdown_trigger`` returns; report the bound address."""
    config = HypercornConfig()
    config.bind = [str(listen)]
    config.accesslog = None
    config.errorlog = logging.getLogger(f"relayd.{name}")
    config.keep_alive_timeout = keep_alive_timeout
    config.backlog = LISTEN_BACKLOG
    config.read_timeout = read_timeout  # type: ignore[assignment]
    config.graceful_timeout = graceful_seconds
    config.include_server_header = False

    async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
        # hypercorn types the app with its TypedDict scopes and events (ours are plain
        # dicts) and task_status with trio's private _TaskStatus class
        await serve(app, config, shutdown_trigger=shutdown_trigger,  # type: ignore[arg-type]
                    task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run_server)
        host_port = binds[0].split("://", 1)[1]
        task_status.started(ListenAddress(listen.host, int(host_port.rsplit(":", 1)[1])))


async def handle_lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol (hypercorn 0.17 needs it answered)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


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
