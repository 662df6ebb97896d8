"""Deliver one webhook envelope to its destination over HTTP and classify the outcome.

The request goes with the method the provider used, to the destination URL extended by
the path and query the provider sent after ``/h/{endpoint_id}`` (`request_target`), byte
for byte: the target is sent as it is, not normalised as a URL (no characters
re-encoded, no dot segments dropped). An envelope from an older edge has no method, path
or query: it is POSTed to the destination as configured. A destination URL is parsed
once (`parse_destination`), with httpx's rules, then reused for every webhook to it.

The body goes byte for byte; the original headers go too, except hop-by-hop ones and
Host (set for the destination), so provider signatures (X-Hub-Signature-256,
Stripe-Signature, ...) still verify. Added: Host, ``Connection: keep-alive``, the
framing (Content-Length, as httpx set it), ``X-Relay-Webhook-Id`` and
``X-Relay-Attempt``, and with ``add_forwarded_for`` the sender's address appended to
``X-Forwarded-For``; nothing else (no Accept or User-Agent of a client's own). 2xx is
success; 408, 429, 5xx except 501, connection and protocol errors and the deadline are
transient; other statuses (405 and 501 too: the destination does not take this method,
and will not on a retry) are permanent failures.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import httpx
import trio

from relayd.hub.client import DeliveryClient, Origin
from relayd.wire import pb

__all__ = ["DeliveryResult", "Destination", "classify", "deliver", "forwarded_headers",
           "parse_destination", "request_target"]

# Headers that describe one hop, not the webhook (RFC 9110 7.6.1), plus Host and the
# framing headers set anew for the request to the destination.
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
# Methods whose empty body is still announced ("Content-Length: 0"), as httpx did.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Destination URLs kept parsed: the configured ones and what the edge names, a handful.
PARSED_DESTINATIONS = 256
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


@dataclass(frozen=True)
class Destination:
    """A destination URL parsed for sending: where to connect, and the request's basis."""

    url: httpx.URL
    origin: Origin
    host: bytes  # the Host header: the URL's host, and its port unless the default
    target: bytes  # the URL's path and query, for a webhook with neither


@functools.lru_cache(maxsize=PARSED_DESTINATIONS)
def parse_destination(url: str) -> Destination:
    """``url`` parsed as httpx does; raises `httpx.InvalidURL` or
    `httpx.UnsupportedProtocol` (not http or https, or no host)."""
    parsed = httpx.URL(url)
    if parsed.scheme and parsed.scheme not in ("http", "https"):  # (httpx's words)
        raise httpx.UnsupportedProtocol(
            f"Request URL has an unsupported protocol '{parsed.scheme}://'.")
    if not parsed.scheme or not parsed.host:
        raise httpx.UnsupportedProtocol(
            "Request URL is missing an 'http://' or 'https://' protocol.")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return Destination(parsed, Origin(parsed.scheme, parsed.raw_host.decode("ascii"), port),
                       parsed.netloc, parsed.raw_path)


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


async def deliver(client: DeliveryClient, url: str, envelope: pb.WebhookEnvelope,
                  deadline_seconds: float, *, add_forwarded_for: bool = False
                  ) -> DeliveryResult:
    """Send the webhook to ``url`` (see the module docstring) within ``deadline_seconds``
    (the whole request, connecting included); never raises for a network or HTTP
    failure, a URL that cannot be sent to, or the deadline."""
    started = time.monotonic()
    answer = None
    try:
        destination = parse_destination(url)
        target = request_target(destination.url, envelope.path, envelope.query)
        method = (envelope.method or DEFAULT_METHOD).upper()
        headers = [(b"Host", destination.host), (b"Connection", b"keep-alive"),
                   *forwarded_headers(envelope, add_forwarded_for=add_forwarded_for)]
        if envelope.payload or method in BODY_METHODS:
            headers.append((b"Content-Length", b"%d" % len(envelope.payload)))
        with trio.move_on_after(deadline_seconds):
            answer = await client.request(
                destination.origin, method.encode("ascii"),
                destination.target if target is None else target, headers, envelope.payload)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return DeliveryResult(False, 0, error, False, time.monotonic() - started)
    if answer is None:
        return DeliveryResult(False, 0, f"timeout after {deadline_seconds:g}s", False,
                              time.monotonic() - started)
    success, permanent = classify(answer.status)
    error = "" if success else f"HTTP {answer.status} {answer.reason}"
    return DeliveryResult(success, answer.status, error[:MAX_ERROR_CHARS], permanent,
                          time.monotonic() - started)
