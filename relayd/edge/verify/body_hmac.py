"""An HMAC-SHA256 of the body in one header: GitHub's scheme, and the generic one.

GitHub ("Validating webhook deliveries"): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256
of the body keyed with the webhook secret>``. The generic ``hmac-sha256`` takes the header,
an optional prefix and hex or base64, which covers senders such as Shopify
(``X-Shopify-Hmac-Sha256``, base64, no prefix). No timestamp is signed, so a captured
webhook can be replayed: the schemes with a timestamp do better where the sender has one.
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
    decode_signature,
    hmac_sha256,
    keyed,
    one_header,
)

__all__ = ["GITHUB_HEADER", "GITHUB_PREFIX", "BodyHmac"]

GITHUB_HEADER = "x-hub-signature-256"
GITHUB_PREFIX = "sha256="


class BodyHmac(Verifier):
    def __init__(self, keys: Sequence[bytes], *, header: str, prefix: str = "",
                 encoding: str = "hex") -> None:
        self._macs = keyed(keys)
        self._header = header
        self._prefix = prefix
        self._encoding = encoding

    def check(self, headers: Headers, query: str, body: bytes, now: float) -> None:
        value = one_header(headers, self._header)
        if not value.startswith(self._prefix):
            raise Rejected(MALFORMED_SIGNATURE)
        received = decode_signature(value[len(self._prefix):], self._encoding)
        if received is None:
            raise Rejected(MALFORMED_SIGNATURE)
        if not any_equal([received], [hmac_sha256(mac, body) for mac in self._macs]):
            raise Rejected(SIGNATURE_MISMATCH)
