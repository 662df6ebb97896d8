"""Sender verification at the ingress: a forged webhook is refused before it is stored.

An endpoint with ``verify = "<scheme>"`` has a `Verifier` (one module per scheme, built
here from its `Verification` config); `SenderVerification` runs the right one on each
request once its body is read, counts and logs refusals (`RejectionLog`), and tells the
ingress the reason, which it answers with 401. An endpoint without ``verify`` takes
anything, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from relayd.edge.config import Endpoint, Verification
from relayd.edge.verify.base import REASONS, Headers, Verifier
from relayd.edge.verify.body_hmac import GITHUB_HEADER, GITHUB_PREFIX, BodyHmac
from relayd.edge.verify.rejections import RejectionLog
from relayd.edge.verify.shared_token import SharedToken
from relayd.edge.verify.slack import SlackSignature
from relayd.edge.verify.standard import StandardWebhooks
from relayd.edge.verify.stripe import StripeSignature

__all__ = ["REASONS", "RejectionLog", "SenderVerification", "Verifier", "build_verifier"]


def build_verifier(spec: Verification) -> Verifier:
    """The verifier for an endpoint's ``verify`` config (loaded with its secrets)."""
    keys = spec.keys
    if not keys:  # a config loaded with load_secret=False (relayctl) verifies nothing
        raise ValueError(f"verify = {spec.scheme!r}: no secret loaded")
    match spec.scheme:
        case "github":
            return BodyHmac(keys, header=GITHUB_HEADER, prefix=GITHUB_PREFIX)
        case "hmac-sha256":
            return BodyHmac(keys, header=spec.header, prefix=spec.prefix,
                            encoding=spec.encoding)
        case "stripe":
            return StripeSignature(keys, tolerance=spec.tolerance)
        case "standard-webhooks":
            return StandardWebhooks(keys, tolerance=spec.tolerance)
        case "slack":
            return SlackSignature(keys, tolerance=spec.tolerance)
        case "token":
            return SharedToken(keys, header=spec.header, query=spec.query)
    raise ValueError(f"unknown verify scheme {spec.scheme!r}")  # config.py rejects it first


class SenderVerification:
    """The endpoints' verifiers, with refusals counted and logged.

    ``on_rejected(endpoint_id, reason)`` is called for each refusal (the metric);
    ``clock`` gives the Unix time signed timestamps are compared with.
    """

    def __init__(self, endpoints: Sequence[Endpoint], *,
                 on_rejected: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 rejection_log: RejectionLog | None = None) -> None:
        self._verifiers = _verifiers(endpoints)
        self._on_rejected = on_rejected
        self._clock = clock
        self._log = RejectionLog() if rejection_log is None else rejection_log

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Verify with ``endpoints``' schemes and secrets from now on (config reload)."""
        self._verifiers = _verifiers(endpoints)

    def check(self, endpoint_id: str, headers: Headers, query: str, body: bytes,
              sender: str) -> str | None:
        """None to store the webhook; else the reason to refuse it (already counted)."""
        verifier = self._verifiers.get(endpoint_id)
        if verifier is None:
            return None
        reason = verifier.verify(headers, query, body, self._clock())
        if reason is not None:
            if self._on_rejected is not None:
                self._on_rejected(endpoint_id, reason)
            self._log.rejected(endpoint_id, sender or "unknown", reason)
        return reason


def _verifiers(endpoints: Sequence[Endpoint]) -> dict[str, Verifier]:
    return {ep.id: build_verifier(ep.verify) for ep in endpoints if ep.verify is not None}
