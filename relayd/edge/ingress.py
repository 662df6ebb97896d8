"""The webhook ingress: ``POST /h/{endpoint_id}[/{path}][?{query}]`` stores a webhook durably.

Answers ``202 {"id": ...}`` only after the row is committed (see `relayd.edge.ingest`).
An endpoint with ``verify`` checks the sender once the body is read (`relayd.edge.verify`):
a webhook that fails is answered ``401 {"error": "<reason>"}`` and never stored.
POST, PUT, PATCH and DELETE are taken (what providers send); GET, HEAD and OPTIONS are
405: a GET to a webhook URL is a provider's verification handshake, which needs an answer
from the destination that an asynchronous relay cannot give. Unknown endpoint 404, body
over ``max_body_bytes`` 413 (refused from Content-Length before reading, or as soon as a
chunked body passes the limit), storage unavailable or full 503 (the store's bounds,
`relayd.edge.capacity`, are checked before the body is read), a body not complete within
``body_timeout`` 408. Nothing that was not stored is ever answered with a 2xx.

What the request line said is kept for the hub: the method, the sub-path after
``/h/{endpoint_id}`` and the query, both byte for byte as received (ASGI ``raw_path`` and
``query_string``: still percent-encoded), and the sender's address (the scope's ``client``:
`relayd.edge.client_addr` sets it from a trusted proxy's header). The sub-path is
carried, not interpreted, with one exception: a ``.`` or ``..`` segment (also as ``%2E``,
or hidden behind ``%2F``/``%5C``) is refused with 400, since the destination would
resolve it against the configured destination path and could be led outside it.

Memory: the bodies being received or waiting for their commit hold at most
``max_inflight_bytes`` between them (a `ByteBudget`). A request reserves its announced
Content-Length before reading, or a chunked body chunk by chunk; one that does not fit is
answered 503 with ``Retry-After`` at once (logged once, then summarised). The reservation
is returned when the request ends, whichever way.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

import trio

from relayd.edge.budget import ByteBudget, Reservation
from relayd.edge.capacity import Capacity
from relayd.edge.config import Endpoint
from relayd.edge.http import Receive, Scope, Send, handle_lifespan, send_json
from relayd.edge.ingest import IngestBatcher, StorageUnavailable
from relayd.edge.store import NewWebhook
from relayd.edge.verify import SenderVerification

__all__ = ["IngressApp", "IngressStatistics"]

log = logging.getLogger(__name__)

PATH_PREFIX = b"/h/"
ALLOWED_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Path segments a destination resolves rather than takes literally (RFC 3986 5.2.4).
DOT_SEGMENTS = frozenset({b".", b".."})
# What a 503 asks the client to wait before retrying.
RETRY_AFTER_SECONDS = 5
# Uploads refused for memory: the first is logged, the rest summarised once per interval.
REFUSAL_LOG_SECONDS = 10.0


@dataclass(frozen=True)
class _RequestLine:
    """What the request said besides headers and body; path and query as latin-1 text."""

    method: str
    path: str
    query: str
    remote_addr: str


def _split_target(raw_path: bytes) -> tuple[str, bytes] | None:
    """``(endpoint_id, sub-path)`` of ``/h/{endpoint_id}[/...]``, or None.

    The sub-path is ``b""`` or starts with ``/``, still percent-encoded; the endpoint id is
    percent-decoded, as it was when only ``scope["path"]`` was read.
    """
    if not raw_path.startswith(PATH_PREFIX):
        return None
    endpoint, slash, rest = raw_path[len(PATH_PREFIX):].partition(b"/")
    if not endpoint:
        return None
    return unquote(endpoint.decode("latin-1"), errors="replace"), slash + rest


def _has_dot_segment(sub_path: bytes) -> bool:
    decoded = unquote_to_bytes(sub_path).replace(b"\\", b"/")
    return any(segment in DOT_SEGMENTS for segment in decoded.split(b"/"))


class _TooLarge(Exception):
    pass


class _OverBudget(Exception):
    pass


class _Disconnected(Exception):
    pass


@dataclass(frozen=True)
class IngressStatistics:
    inflight_bytes: int  # reserved by bodies being received or waiting for their commit
    max_inflight_bytes: int


class _RefusalLog:
    """One log line for the first refusal, then one summary per interval at most."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._since: float | None = None
        self._unlogged = 0

    def refused(self, endpoint_id: str, size: int, budget: ByteBudget) -> None:
        now = trio.current_time()
        if self._since is not None and now - self._since < self._interval:
            self._unlogged += 1
            return
        self._summarise(now)
        stats = budget.statistics()
        log.warning("upload refused (503): ingress memory bound reached endpoint=%s bytes=%d "
                    "inflight_bytes=%d max_inflight_bytes=%d (further refusals are summarised "
                    "every %gs)", endpoint_id, size, stats.in_use, stats.limit, self._interval)
        self._since = now

    def admitted(self) -> None:
        if self._unlogged and self._since is not None \
                and trio.current_time() - self._since >= self._interval:
            self._summarise(trio.current_time())
            self._since = None

    def _summarise(self, now: float) -> None:
        if self._unlogged and self._since is not None:
            log.warning("ingress memory bound: %d more uploads refused (503) in the last %.0fs",
                        self._unlogged, now - self._since)
        self._unlogged = 0


class IngressApp:
    """ASGI app for the public webhook listener."""

    def __init__(self, endpoints: Sequence[Endpoint], batcher: IngestBatcher, *,
                 max_body_bytes: int, max_inflight_bytes: int, body_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time, capacity: Capacity | None = None,
                 on_rejected: Callable[[str, str], None] | None = None) -> None:
        """``capacity``: the store's bounds (`relayd.edge.capacity`), checked before the
        body is read; None: none. ``on_rejected(endpoint_id, reason)``: a webhook failed
        its sender verification."""
        self._endpoints = {ep.id for ep in endpoints}
        self._senders = SenderVerification(endpoints, on_rejected=on_rejected, clock=clock)
        self._batcher = batcher
        self._max_body = max_body_bytes
        self._budget = ByteBudget(max_inflight_bytes)
        self._refusals = _RefusalLog(REFUSAL_LOG_SECONDS)
        self._body_timeout = body_timeout
        self._clock = clock
        self._capacity = capacity

    def update_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Take webhooks for ``endpoints`` (and verify them so) from now on (config reload);
        requests already past the endpoint check finish as they started."""
        self._senders.update(endpoints)
        self._endpoints = {ep.id for ep in endpoints}

    def statistics(self) -> IngressStatistics:
        stats = self._budget.statistics()
        return IngressStatistics(inflight_bytes=stats.in_use, max_inflight_bytes=stats.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        target = _split_target(scope.get("raw_path") or scope["path"].encode())
        if target is None:
            await send_json(send, 404, {"error": "not found"})
            return
        endpoint_id, sub_path = target
        if scope["method"] not in ALLOWED_METHODS:
            await send_json(send, 405, {"error": "method not allowed"},
                            [(b"allow", ", ".join(ALLOWED_METHODS).encode())])
            return
        if endpoint_id not in self._endpoints:
            await send_json(send, 404, {"error": "unknown endpoint"})
            return
        if _has_dot_segment(sub_path):
            await send_json(send, 400, {"error": "path has a '.' or '..' segment"})
            return
        refusal = self._capacity.refusal(endpoint_id) if self._capacity else None
        if refusal is not None:
            await send_json(send, 503, {"error": refusal.error},
                            [(b"retry-after", str(refusal.retry_after).encode()),
                             (b"connection", b"close")])
            return
        client = scope.get("client")
        request = _RequestLine(
            method=scope["method"],
            # latin-1: one character per byte, so any byte is kept exactly (hypercorn only
            # lets visible ASCII through in the path; HTTP/2 may bring anything in a query)
            path=sub_path.decode("latin-1"),
            query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            remote_addr=str(client[0]) if client else "",
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            declared = next((int(v) for k, v in headers if k == "content-length"), None)
        except ValueError:
            await send_json(send, 400, {"error": "invalid content-length"})
            return
        with self._budget.hold() as reservation:
            await self._receive_and_store(request, endpoint_id, headers, declared,
                                          reservation, receive, send)

    async def _receive_and_store(self, request: _RequestLine, endpoint_id: str,
                                 headers: list[tuple[str, str]], declared: int | None,
                                 reservation: Reservation, receive: Receive, send: Send) -> None:
        """Read the body within ``reservation``, commit it, answer; the caller releases."""
        try:
            if declared is not None and declared > self._max_body:
                raise _TooLarge
            if declared is not None and not reservation.grow_to(declared):
                raise _OverBudget
            body = b""
            with trio.move_on_after(self._body_timeout) as body_deadline:
                body = await self._read_body(receive, reservation)
            if body_deadline.cancelled_caught:  # a slow (or stalled) body: slowloris
                await send_json(send, 408, {"error": "request body not received in time"},
                                [(b"connection", b"close")])
                return
        except _TooLarge:
            await send_json(send, 413, {"error": f"body larger than {self._max_body} bytes"},
                            [(b"connection", b"close")])
            return
        except _OverBudget:
            self._refusals.refused(endpoint_id, declared or reservation.size, self._budget)
            await send_json(send, 503, {"error": "too many uploads in progress, retry later"},
                            [(b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                             (b"connection", b"close")])
            return
        except _Disconnected:
            return
        self._refusals.admitted()
        if endpoint_id not in self._endpoints:  # removed by a config reload meanwhile
            await send_json(send, 404, {"error": "unknown endpoint"})
            return
        # the endpoint's verification as configured now (a reload may have changed it)
        rejected = self._senders.check(endpoint_id, headers, request.query, body,
                                       request.remote_addr)
        if rejected is not None:
            await send_json(send, 401, {"error": rejected})
            return
        webhook = NewWebhook(
            id=uuid.uuid4().hex,
            endpoint_id=endpoint_id,
            method=request.method,
            headers=headers,
            body=body,
            received_at=self._clock(),
            path=request.path,
            query=request.query,
            remote_addr=request.remote_addr,
        )
        try:
            await self._batcher.store(webhook)
        except StorageUnavailable as exc:
            log.error("webhook refused: storage unavailable endpoint=%s error=%s",
                      endpoint_id, exc)
            await send_json(send, 503, {"error": "storage unavailable, retry later"},
                            [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
            return
        log.debug("webhook received webhook_id=%s endpoint=%s bytes=%d", webhook.id,
                  endpoint_id, len(body))
        await send_json(send, 202, {"id": webhook.id})

    async def _read_body(self, receive: Receive, reservation: Reservation) -> bytes:
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
            if not reservation.grow_to(size):  # within an announced length: already held
                raise _OverBudget
            chunks.append(chunk)
            if not message.get("more_body", False):
                # the join copies the body once more: that transient copy is not reserved
                # (one at a time: nothing awaits during it)
                return b"".join(chunks)
