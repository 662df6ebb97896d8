"""Deliver one webhook envelope to its destination over HTTP and classify the outcome.

The body goes byte for byte; the original headers go too, except hop-by-hop ones and
Host (set for the destination), so provider signatures (X-Hub-Signature-256,
Stripe-Signature, ...) still verify. ``X-Relay-Webhook-Id`` and ``X-Relay-Attempt`` are
added. 2xx is success; 408, 429, 5xx, connection errors and timeouts are transient;
other statuses are permanent failures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import trio

from relayd.wire import pb

__all__ = ["DeliveryResult", "classify", "deliver", "forwarded_headers"]

# Headers that describe one hop, not the webhook (RFC 9110 7.6.1), plus Host and the
# framing headers httpx recomputes for the new request.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
    "content-length",
})
TRANSIENT_STATUSES = frozenset({408, 429})
# Longest error text sent back to the edge.
MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class DeliveryResult:
    success: bool
    status_code: int
    error: str
    permanent: bool
    seconds: float

    def ack(self, webhook_id: str) -> pb.DeliveryAck:
        return pb.DeliveryAck(webhook_id=webhook_id, success=self.success,
                              status_code=self.status_code, error_message=self.error,
                              permanent_failure=self.permanent)


def forwarded_headers(envelope: pb.WebhookEnvelope) -> list[tuple[bytes, bytes]]:
    """The headers sent to the destination (as bytes: the edge kept them as latin-1)."""
    headers = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in envelope.headers.items()
        if name.lower() not in HOP_BY_HOP and not name.lower().startswith("proxy-")
    ]
    headers.append((b"x-relay-webhook-id", envelope.id.encode()))
    headers.append((b"x-relay-attempt", str(envelope.attempt).encode()))
    return headers


def classify(status_code: int) -> tuple[bool, bool]:
    """``(success, permanent)`` for an HTTP status from the destination."""
    if 200 <= status_code < 300:
        return True, False
    if status_code in TRANSIENT_STATUSES or status_code >= 500:
        return False, False
    return False, True


async def deliver(client: httpx.AsyncClient, url: str, envelope: pb.WebhookEnvelope,
                  deadline_seconds: float) -> DeliveryResult:
    """POST the webhook to ``url`` within ``deadline_seconds`` (the whole request,
    body included); never raises for a network or HTTP failure, or the deadline."""
    started = time.monotonic()
    response = None
    try:
        with trio.move_on_after(deadline_seconds):
            response = await client.post(url, content=envelope.payload,
                                         headers=forwarded_headers(envelope))
    except httpx.TimeoutException as exc:
        return DeliveryResult(False, 0, f"timeout: {type(exc).__name__}", False,
                              time.monotonic() - started)
    except (httpx.HTTPError, UnicodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return DeliveryResult(False, 0, error, False, time.monotonic() - started)
    if response is None:
        return DeliveryResult(False, 0, f"timeout after {deadline_seconds:g}s", False,
                              time.monotonic() - started)
    success, permanent = classify(response.status_code)
    error = "" if success else f"HTTP {response.status_code} {response.reason_phrase}"
    return DeliveryResult(success, response.status_code, error[:MAX_ERROR_CHARS], permanent,
                          time.monotonic() - started)
