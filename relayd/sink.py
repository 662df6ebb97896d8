"""``python -m relayd.sink [PORT]``: a destination that prints every request it receives.

For trying the relay out: it stands in for the home service (Home Assistant & co) that
relay-hub delivers to. It accepts any method on any path, answers 200 (or ``--status``),
and prints the method, path, query, headers and the start of the body. Ctrl-C or
SIGTERM stops it.

It belongs to neither daemon (it is what relay-hub talks *to*), so it lives beside
``relayd.edge`` and ``relayd.hub`` and imports neither (only `relayd.common`); it serves
with hypercorn, which relayd already depends on.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from relayd.common.asgi import Scope, handle_lifespan

__all__ = ["DEFAULT_PORT", "main"]

# conf/relayd.local.toml's example endpoint delivers to http://127.0.0.1:9000/webhook.
DEFAULT_PORT = 9000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_STATUS = 200
# How much of a body is printed; the rest is counted.
BODY_PREVIEW_BYTES = 500
# Requests in progress when a stop is asked get this long to finish.
GRACEFUL_SECONDS = 1.0


class PrintingApp:
    """An ASGI app: answer every HTTP request with ``status`` and print what arrived."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        print(describe_request(scope, bytes(body), self.status), flush=True)
        data = b"ok\n"
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def describe_request(scope: Scope, body: bytes, status: int) -> str:
    """The lines printed for one request."""
    target = scope["path"]
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    client = scope.get("client")
    source = f" from {client[0]}:{client[1]}" if client else ""
    lines = [f"{scope['method']} {target} ({len(body)} bytes{source}) -> {status}"]
    for name, value in scope["headers"]:
        lines.append(f"  {name.decode('latin-1')}: {value.decode('latin-1')}")
    if body:
        more = len(body) - BODY_PREVIEW_BYTES
        lines.append(f"  body: {_preview(body[:BODY_PREVIEW_BYTES])}"
                     + (f" ... ({more} more bytes)" if more > 0 else ""))
    return "\n".join(lines)


def _preview(head: bytes) -> str:
    """Text as text (lines indented under ``body:``); anything else as a bytes literal."""
    text: str | None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a preview may cut a multi-byte character in two
        text = head[:exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is None or any(not c.isprintable() and c not in "\n\r\t" for c in text):
        return repr(head)
    return text.replace("\r\n", "\n").replace("\n", "\n        ")


async def _until_signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def run(host: str, port: int, status: int) -> None:
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("relayd.sink")
    config.graceful_timeout = GRACEFUL_SECONDS
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, PrintingApp(status), config,  # type: ignore[arg-type]
                                            shutdown_trigger=_until_signalled))
        print(f"sink: listening on {', '.join(binds)}; any method, any path, answers "
              f"{status}; Ctrl-C stops it", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relayd.sink",
        description="A destination for trying the relay: accepts any method on any path, "
                    "answers 200 and prints what arrives (method, path, query, headers, "
                    "body preview).")
    parser.add_argument("port", nargs="?", type=int, default=DEFAULT_PORT,
                        help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s)")
    parser.add_argument("--status", type=int, default=DEFAULT_STATUS,
                        help="HTTP status to answer, e.g. 503 to watch the edge retry "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if not 100 <= args.status <= 599:
        parser.error(f"--status: must be an HTTP status code 100-599, got {args.status}")
    code = 0
    try:
        trio.run(run, args.host, args.port, args.status)
    except* OSError as group:
        error = group.exceptions[0]
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"sink: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
