"""Deliver one webhook envelope to its destination over HTTP and classify the outcome.

The request goes with the method the provider used, to the destination URL extended by
the path and query the provider sent after ``/h/{endpoint_id}`` (`request_target`), byte
for byte: the target is handed to httpcore as it is, since httpx would normalise the URL
(re-encode characters, drop dot segments). An envelope from an older edge has no method,
path or query: it is POSTed to the destination as configured.

The body goes byte for byte; the original headers go too, except hop-by-hop ones and
Host (set for the destination), so provider signatures (X-Hub-Signature-256,
Stripe-Signature, ...) still verify; the headers httpx would add of its own (Accept,
Accept-Encoding, User-Agent) are left out. ``X-Relay-Webhook-Id`` and ``X-Relay-Attempt``
are added, and with ``add_forwarded_for`` the sender's address is appended to
``X-Forwarded-For``. 2xx is success; 408, 429, 5xx except 501, connection errors and
timeouts are transient; other statuses (405 and 501 too: the destination does not take
this method, and will not on a retry) are permanent failures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import trio

from relayd.wire import pb

__all__ = ["DeliveryResult", "classify", "deliver", "forwarded_headers", "request_target"]

# Headers that describe one hop, not the webhook (RFC 9110 7.6.1), plus Host and the
# framing headers httpx recomputes for the new request.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
    "content-length",
})
TRANSIENT_STATUSES = frozenset({408, 429})
# Server errors that a retry will not cure: the method is not implemented there.
PERMANENT_SERVER_STATUSES = frozenset({501})
# What an envelope without a method (from an edge older than the field) was received as.
DEFAULT_METHOD = "POST"
FORWARDED_FOR = "x-forwarded-for"
# Headers httpx puts on every request unless given; a webhook that came without them goes
# without them. (Its "Connection: keep-alive" describes the hub's own hop: it stays.)
HTTPX_DEFAULTS = ("accept", "accept-encoding", "user-agent")
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


def forwarded_headers(envelope: pb.WebhookEnvelope, *, add_forwarded_for: bool = False
                      ) -> list[tuple[bytes, bytes]]:
    """The headers sent to the destination (as bytes: the edge kept them as latin-1).

    With ``add_forwarded_for``, the sender's address is appended to the
    ``X-Forwarded-For`` it carries (or makes one); not when the edge did not send it.
    """
    sender = envelope.remote_addr if add_forwarded_for else ""
    headers = []
    for name, value in envelope.headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered.startswith("proxy-"):
            continue
        if sender and lowered == FORWARDED_FOR:
            value, sender = f"{value}, {sender}", ""
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    if sender:
        headers.append((FORWARDED_FOR.encode(), sender.encode("latin-1")))
    headers.append((b"x-relay-webhook-id", envelope.id.encode()))
    headers.append((b"x-relay-attempt", str(envelope.attempt).encode()))
    return headers


def classify(status_code: int) -> tuple[bool, bool]:
    """``(success, permanent)`` for an HTTP status from the destination."""
    if 200 <= status_code < 300:
        return True, False
    if status_code in TRANSIENT_STATUSES or (
            status_code >= 500 and status_code not in PERMANENT_SERVER_STATUSES):
        return False, False
    return False, True


def request_target(destination: httpx.URL, path: str, query: str) -> bytes | None:
    """The request target for ``destination`` extended by a webhook's ``path`` and ``query``.

    The paths are joined with exactly one "/" between them; the query follows "?" (after
    the destination's own query and "&", if it has one; a "?" the destination ends with is
    kept). Both are taken byte for byte, percent-encoding and all. None when both are
    empty: the destination as configured.
    """
    if not path and not query:
        return None
    base_path, question, base_query = destination.raw_path.partition(b"?")
    sub_path = path.encode()
    if base_path.endswith(b"/") and sub_path.startswith(b"/"):
        sub_path = sub_path[1:]
    elif sub_path and not base_path.endswith(b"/") and not sub_path.startswith(b"/"):
        sub_path = b"/" + sub_path
    queries = b"&".join(q for q in (base_query, query.encode()) if q)
    return base_path + sub_path + (b"?" + queries if queries or question else b"")


async def deliver(client: httpx.AsyncClient, url: str, envelope: pb.WebhookEnvelope,
                  deadline_seconds: float, *, add_forwarded_for: bool = False
                  ) -> DeliveryResult:
    """Send the webhook to ``url`` (see the module docstring) within ``deadline_seconds``
    (the whole request, body included); never raises for a network or HTTP failure, a
    URL httpx refuses, or the deadline."""
    started = time.monotonic()
    response = None
    try:
        destination = httpx.URL(url)
        target = request_target(destination, envelope.path, envelope.query)
        headers = forwarded_headers(envelope, add_forwarded_for=add_forwarded_for)
        request = client.build_request(
            envelope.method or DEFAULT_METHOD, destination, content=envelope.payload,
            headers=headers,
            # httpcore sends this target instead of the one httpx would normalise
            extensions={} if target is None else {"target": target})
        sent = {name.lower() for name, _ in headers}
        for name in HTTPX_DEFAULTS:
            if name.encode() not in sent and name in request.headers:
                del request.headers[name]
        with trio.move_on_after(deadline_seconds):
            response = await client.send(request)
    except httpx.TimeoutException as exc:
        return DeliveryResult(False, 0, f"timeout: {type(exc).__name__}", False,
                              time.monotonic() - started)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return DeliveryResult(False, 0, error, False, time.monotonic() - started)
    if response is None:
        return DeliveryResult(False, 0, f"timeout after {deadline_seconds:g}s", False,
                              time.monotonic() - started)
    success, permanent = classify(response.status_code)
    error = "" if success else f"HTTP {response.status_code} {response.reason_phrase}"
    return DeliveryResult(success, response.status_code, error[:MAX_ERROR_CHARS], permanent,
                          time.monotonic() - started)
