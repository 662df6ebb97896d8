"""The wire form of a stored webhook, built mostly once, at arrival.

Building a protobuf ``WebhookEnvelope`` per delivery (header map, timestamp, payload) was
the largest part of the dispatcher's cost. Protobuf fields may come in any order and a
message is the concatenation of its fields, so the ingest path serializes the part that
never changes (id, endpoint, arrival time, headers, method, path, query, sender address)
once (`envelope_head`), and each delivery appends what does (payload, destination URL,
attempt) to make the ``StreamResponse{webhook: ...}`` bytes directly (`stream_response`).

Path and query are stored as latin-1 text of the received bytes; protobuf strings must be
UTF-8 and a request target must be visible ASCII, so on the wire every byte outside
0x21-0x7E is percent-encoded (`wire_text`): the destination gets a valid request target
that decodes to the same bytes, and every other byte unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from relayd.wire import pb

__all__ = ["envelope_head", "joined_headers", "stream_response", "wire_text"]

# Bytes (as latin-1 characters) that cannot stand in a request target as they are.
_NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]")

# Field tags (field number << 3 | wire type) of relay.v1 messages used below.
_DESTINATION_URL = b"\x1a"  # WebhookEnvelope.destination_url = 3, length-delimited
_PAYLOAD = b"\x32"  # WebhookEnvelope.payload = 6, length-delimited
_ATTEMPT = b"\x38"  # WebhookEnvelope.attempt = 7, varint
_RESPONSE_WEBHOOK = b"\x12"  # StreamResponse.webhook = 2, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def joined_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as the envelope carries them: repeated names joined with ", "."""
    joined: dict[str, str] = {}
    for name, value in headers:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def wire_text(latin1: str) -> str:
    """Received bytes (as latin-1 text) for a path or query field: ``%XX`` outside 0x21-0x7E."""
    return _NOT_VISIBLE_ASCII.sub(lambda match: f"%{ord(match.group()):02X}", latin1)


def envelope_head(webhook_id: str, endpoint_id: str, received_at: float,
                  headers: Iterable[tuple[str, str]], *, method: str = "", path: str = "",
                  query: str = "", remote_addr: str = "") -> bytes:
    """The serialized fields of a WebhookEnvelope that never change for this webhook.

    ``path`` and ``query`` are latin-1 text of the received bytes (see `wire_text`).
    """
    head = pb.WebhookEnvelope(id=webhook_id, endpoint_id=endpoint_id,
                              headers=joined_headers(headers), method=method,
                              path=wire_text(path), query=wire_text(query),
                              remote_addr=remote_addr)
    head.received_at.FromNanoseconds(round(received_at * 1e9))
    return head.SerializeToString()


def stream_response(head: bytes, payload: bytes, destination_url: str, attempt: int) -> bytes:
    """Serialized ``StreamResponse{webhook: head + payload + destination + attempt}``."""
    url = destination_url.encode()
    parts = [head]
    if payload:
        parts += (_PAYLOAD, _varint(len(payload)), payload)
    if url:
        parts += (_DESTINATION_URL, _varint(len(url)), url)
    parts += (_ATTEMPT, _varint(attempt))
    inner = b"".join(parts)
    return b"".join((_RESPONSE_WEBHOOK, _varint(len(inner)), inner))
