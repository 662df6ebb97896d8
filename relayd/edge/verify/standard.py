"""Standard Webhooks (the spec at standard-webhooks/standard-webhooks), as Svix sends it.

Headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: a
space-separated list of ``<version>,<base64>``; a ``v1`` signature is the HMAC-SHA256 of
``"{id}.{timestamp}.{body}"`` keyed with the secret, which is serialised as ``whsec_`` +
base64 (decoded when the config is read). The list carries one signature per active
secret while the sender rotates; one ``v1`` match suffices, other versions (``v1a``,
asymmetric) are skipped. Svix sends the same headers prefixed ``svix-`` unless the account
has them white-labelled; both are taken, as Svix's libraries do.
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

__all__ = ["HEADER_PREFIXES", "StandardWebhooks"]

HEADER_PREFIXES = ("webhook-", "svix-")


class StandardWebhooks(Verifier):
    def __init__(self, keys: Sequence[bytes], *, tolerance: float) -> None:
        self._macs = keyed(keys)
        self._tolerance = tolerance

    def check(self, headers: Headers, query: str, body: bytes, now: float) -> None:
        names = {key for key, _ in headers}
        prefix = next((p for p in HEADER_PREFIXES if f"{p}signature" in names),
                      HEADER_PREFIXES[0])
        msg_id = one_header(headers, f"{prefix}id")
        timestamp = one_header(headers, f"{prefix}timestamp")
        seconds = parse_timestamp(timestamp)
        signatures = []
        for entry in one_header(headers, f"{prefix}signature").split(" "):
            version, _, value = entry.partition(",")
            signature = decode_signature(value, "base64") if version == "v1" else None
            if signature is not None:
                signatures.append(signature)
        if not signatures:
            raise Rejected(MALFORMED_SIGNATURE)
        signed = f"{msg_id}.{timestamp}.".encode("latin-1")
        if not any_equal(signatures, [hmac_sha256(mac, signed, body) for mac in self._macs]):
            raise Rejected(SIGNATURE_MISMATCH)
        check_fresh(seconds, now, self._tolerance)
