"""The hub's ConnectRequest signature: HMAC-SHA256 of ``"<hub_id>:<timestamp>"``.

Shared by the hub (which signs) and the edge (which checks, see `relayd.edge.auth`).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "signatures_match"]


def sign(secret: bytes, hub_id: str, timestamp: int) -> str:
    """The lowercase hex HMAC-SHA256 a hub sends in ``ConnectRequest.signature``."""
    return hmac.new(secret, f"{hub_id}:{timestamp}".encode(), hashlib.sha256).hexdigest()


def signatures_match(expected: str, given: str) -> bool:
    """Constant-time comparison (`hmac.compare_digest`) of two signatures."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
