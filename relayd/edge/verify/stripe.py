"""Stripe ("Check the webhook signatures", verifying manually).

``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]``: each ``v1`` is the
hex HMAC-SHA256 of ``"{t}.{body}"`` keyed with the endpoint's signing secret, used as it
is written (``whsec_...``, not decoded). Several ``v1`` come while Stripe rolls a secret;
one match suffices. Other schemes (the test-mode ``v0``) are ignored, against downgrades,
and so is a ``v1`` that is not hex (Stripe's own library skips it too). Stripe's libraries
refuse a timestamp older than 300 s by default; here ``tolerance``, either way.
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

__all__ = ["HEADER", "StripeSignature"]

HEADER = "stripe-signature"


class StripeSignature(Verifier):
    def __init__(self, keys: Sequence[bytes], *, tolerance: float) -> None:
        self._macs = keyed(keys)
        self._tolerance = tolerance

    def check(self, headers: Headers, query: str, body: bytes, now: float) -> None:
        timestamp: str | None = None
        signatures: list[bytes] = []
        for item in one_header(headers, HEADER).split(","):
            scheme, _, value = item.partition("=")
            if scheme == "t" and timestamp is None:
                timestamp = value
            elif scheme == "v1":
                signature = decode_signature(value, "hex")
                if signature is not None:
                    signatures.append(signature)
        if timestamp is None:
            raise Rejected(MALFORMED_SIGNATURE)
        seconds = parse_timestamp(timestamp)
        signed = (timestamp + ".").encode("latin-1")
        if not any_equal(signatures, [hmac_sha256(mac, signed, body) for mac in self._macs]):
            raise Rejected(SIGNATURE_MISMATCH)
        # after the signature: a stale one is then an authentic webhook replayed or delayed
        check_fresh(seconds, now, self._tolerance)
