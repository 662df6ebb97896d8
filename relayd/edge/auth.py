"""Hub authentication on the edge: the signature, a clock window, replays.

`Authenticator.check` is what the edge runs on each ConnectRequest (the signature itself
is `relayd.common.signing.sign`). It answers a short reason for a rejection (sent back
to the hub, so it never includes the secret or the expected signature).
"""

from __future__ import annotations

import hmac
from collections import OrderedDict

from relayd.common.signing import sign, signatures_match

__all__ = ["Authenticator"]

# Accepted ConnectRequests remembered for replay detection. Entries expire with the
# auth window; this bound only matters under a flood of valid connects.
REPLAY_MEMORY_MAX = 10_000


class Authenticator:
    """Checks ConnectRequests for one hub id and one shared secret."""

    def __init__(self, hub_id: str, secret: bytes, window_seconds: float) -> None:
        self._hub_id = hub_id
        self._secret = secret
        self._window = window_seconds
        # (hub_id, timestamp, signature) -> wall-clock time after which it may be forgotten
        self._accepted: OrderedDict[tuple[str, int, str], float] = OrderedDict()

    def check(self, hub_id: str, timestamp: int, signature: str, now: float) -> str | None:
        """Return None if the request is authentic and fresh, else a short reason.

        A request that passes is remembered, so the same one is refused next time.
        """
        self._forget_expired(now)
        # Compare the signature even for an unknown hub id, so the answer's timing does
        # not tell which hub ids exist.
        expected = sign(self._secret, hub_id, timestamp)
        signature_ok = signatures_match(expected, signature)
        if not hmac.compare_digest(hub_id.encode(), self._hub_id.encode()):
            return "unknown hub_id"
        if not signature_ok:
            return "invalid signature"
        if abs(now - timestamp) > self._window:
            return "timestamp outside the allowed window"
        key = (hub_id, timestamp, signature)
        if key in self._accepted:
            return "replayed connect request"
        self._accepted[key] = timestamp + self._window
        while len(self._accepted) > REPLAY_MEMORY_MAX:
            self._accepted.popitem(last=False)
        return None

    def update_secret(self, secret: bytes) -> None:
        """Check new ConnectRequests against ``secret`` (config reload); a hub already
        connected stays so."""
        self._secret = secret

    def replay_memory_size(self) -> int:
        return len(self._accepted)

    def _forget_expired(self, now: float) -> None:
        expired = [key for key, until in self._accepted.items() if until < now]
        for key in expired:
            del self._accepted[key]
