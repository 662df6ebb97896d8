"""The wire form of a stored webhook, built mostly once, at arrival.

Building a protobuf ``WebhookEnvelope`` per delivery (header map, timestamp, payload) was
the largest part of the dispatcher's cost. Protobuf fields may come in any order and a
message is the concatenation of its fields, so the ingest path serializes the part that
never changes (id, endpoint, arrival time, headers) once (`envelope_head`), and each
delivery appends what does (payload, destination URL, attempt) to make the
``StreamResponse{webhook: ...}`` bytes directly (`stream_response`).
"""

from __future__ import annotations

from collections.abc import Iterable

from relayd.wire import pb

__all__ = ["envelope_head", "joined_headers", "stream_response"]

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


def envelope_head(webhook_id: str, endpoint_id: str, received_at: float,
                  headers: Iterable[tuple[str, str]]) -> bytes:
    """The serialized fields of a WebhookEnvelope that never change for this webhook."""
    head = pb.WebhookEnvelope(id=webhook_id, endpoint_id=endpoint_id,
                              headers=joined_headers(headers))
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
