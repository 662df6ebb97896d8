"""The webhook ingress: ``POST /h/{endpoint_id}`` (or PUT) stores a webhook durably.

Answers ``202 {"id": ...}`` only after the row is committed (see `relayd.edge.ingest`).
Unknown endpoint 404, body over ``max_body_bytes`` 413 (refused from Content-Length
before reading, or as soon as a chunked body passes the limit), other methods 405,
storage unavailable 503, a body not complete within ``body_timeout`` 408. Nothing that
was not stored is ever answered with a 2xx.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence

import trio

from relayd.edge.config import Endpoint
from relayd.edge.http import Receive, Scope, Send, handle_lifespan, send_json
from relayd.edge.ingest import IngestBatcher, StorageUnavailable
from relayd.edge.store import NewWebhook

__all__ = ["IngressApp"]

log = logging.getLogger(__name__)

PATH_PREFIX = "/h/"
ALLOWED_METHODS = ("POST", "PUT")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class IngressApp:
    """ASGI app for the public webhook listener."""

    def __init__(self, endpoints: Sequence[Endpoint], batcher: IngestBatcher, *,
                 max_body_bytes: int, body_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._endpoints = {ep.id for ep in endpoints}
        self._batcher = batcher
        self._max_body = max_body_bytes
        self._body_timeout = body_timeout
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        endpoint_id = path[len(PATH_PREFIX):] if path.startswith(PATH_PREFIX) else ""
        if not endpoint_id or "/" in endpoint_id:
            await send_json(send, 404, {"error": "not found"})
            return
        if scope["method"] not in ALLOWED_METHODS:
            await send_json(send, 405, {"error": "method not allowed"},
                            [(b"allow", ", ".join(ALLOWED_METHODS).encode())])
            return
        if endpoint_id not in self._endpoints:
            await send_json(send, 404, {"error": "unknown endpoint"})
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            declared = next((int(v) for k, v in headers if k == "content-length"), 0)
        except ValueError:
            await send_json(send, 400, {"error": "invalid content-length"})
            return
        try:
            if declared > self._max_body:
                raise _TooLarge
            body = b""
            with trio.move_on_after(self._body_timeout) as body_deadline:
                body = await self._read_body(receive)
            if body_deadline.cancelled_caught:  # a slow (or stalled) body: slowloris
                await send_json(send, 408, {"error": "request body not received in time"},
                                [(b"connection", b"close")])
                return
        except _TooLarge:
            await send_json(send, 413, {"error": f"body larger than {self._max_body} bytes"},
                            [(b"connection", b"close")])
            return
        except _Disconnected:
            return
        webhook = NewWebhook(
            id=uuid.uuid4().hex,
            endpoint_id=endpoint_id,
            method=scope["method"],
            headers=headers,
            body=body,
            received_at=self._clock(),
        )
        try:
            await self._batcher.store(webhook)
        except StorageUnavailable as exc:
            log.error("webhook refused: storage unavailable endpoint=%s error=%s",
                      endpoint_id, exc)
            await send_json(send, 503, {"error": "storage unavailable, retry later"},
                            [(b"retry-after", b"5")])
            return
        log.info("webhook received webhook_id=%s endpoint=%s bytes=%d", webhook.id,
                 endpoint_id, len(body))
        await send_json(send, 202, {"id": webhook.id})

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
