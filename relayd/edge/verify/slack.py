"""Slack ("Verifying requests from Slack").

``X-Slack-Signature: v0=<hex>``, the HMAC-SHA256 of ``"v0:{timestamp}:{body}"`` keyed with
the app's signing secret, where the timestamp is ``X-Slack-Request-Timestamp``. Slack
advises refusing a request more than five minutes from the local clock: ``tolerance``.
"""

from __future__ import annotations

from collections.abc import Sequence

from relayd.edge.verify.base import (
    MALFORMED_SIGNATURE,
    SIGNATURE_MISMATCH,
    Headers,
    Rejected,
    Verifier,
    any_equal,
    check_fresh,
    decode_signature,
    hmac_sha256,
    keyed,
    one_header,
    parse_timestamp,
)

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SlackSignature"]

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
VERSION = "v0"


class SlackSignature(Verifier):
    def __init__(self, keys: Sequence[bytes], *, tolerance: float) -> None:
        self._macs = keyed(keys)
        self._tolerance = tolerance

    def check(self, headers: Headers, query: str, body: bytes, now: float) -> None:
        value = one_header(headers, SIGNATURE_HEADER)
        timestamp = one_header(headers, TIMESTAMP_HEADER)
        seconds = parse_timestamp(timestamp)
        version, _, hex_signature = value.partition("=")
        received = decode_signature(hex_signature, "hex") if version == VERSION else None
        if received is None:
            raise Rejected(MALFORMED_SIGNATURE)
        signed = f"{VERSION}:{timestamp}:".encode("latin-1")
        if not any_equal([received], [hmac_sha256(mac, signed, body) for mac in self._macs]):
            raise Rejected(SIGNATURE_MISMATCH)
        check_fresh(seconds, now, self._tolerance)
