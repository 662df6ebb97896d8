"""What the store takes and gives: webhook rows, acks, ack outcomes, the retry policy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from relayd.wire import SKIPPED_ERROR

__all__ = [
    "DEAD_LETTER",
    "DELIVERED",
    "FAILED",
    "PENDING",
    "STATUSES",
    "AckOutcome",
    "AckRecord",
    "NewWebhook",
    "Outcome",
    "RetryPolicy",
    "StoredWebhook",
]

PENDING, DELIVERED, FAILED, DEAD_LETTER = "pending", "delivered", "failed", "dead_letter"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD_LETTER)


@dataclass(frozen=True)
class NewWebhook:
    """A webhook as the ingress received it, about to be stored.

    ``path`` (what followed ``/h/{endpoint_id}``) and ``query`` are the received bytes as
    latin-1 text (one character per byte: exact for any byte, readable for the ASCII
    that nearly every request target is); so are the header names and values.
    """

    id: str
    endpoint_id: str
    method: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    received_at: float
    path: str = ""
    query: str = ""
    remote_addr: str = ""


class StoredWebhook(NamedTuple):
    """A pending webhook read back for dispatch (a tuple: thousands are made per second)."""

    seq: int
    id: str
    endpoint_id: str
    method: str
    headers_json: str  # [[name, value], ...]; parsed only when needed (`headers`)
    body: bytes
    received_at: float
    attempts: int
    next_attempt_at: float
    # id, endpoint, arrival time, headers and request line already serialized
    # (relayd.edge.envelopes); None for a row written without it (by another program, or
    # before schema 3).
    envelope_head: bytes | None = None
    path: str = ""  # latin-1 text of the received bytes, like `NewWebhook`'s
    query: str = ""
    remote_addr: str = ""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return tuple((str(k), str(v)) for k, v in json.loads(self.headers_json))


class AckRecord(NamedTuple):
    """One DeliveryAck from the hub, as the ack writer applies it."""

    webhook_id: str
    success: bool
    status_code: int
    error_message: str
    permanent_failure: bool

    def is_skip(self) -> bool:
        """An ordered-pipeline hub skipped it (not an attempt, nothing to record)."""
        return (not self.success and not self.permanent_failure and self.status_code == 0
                and self.error_message == SKIPPED_ERROR)


Outcome = Literal["delivered", "failed", "retry", "dead_letter", "skipped", "ignored"]


class AckOutcome(NamedTuple):
    """What applying one ack did; ``endpoint_id`` is None for an unknown webhook.

    ``received_at`` is the webhook's arrival time (None for an unknown webhook): with the
    time the ack was applied, it gives the delivery latency (`relayd.edge.activity`).
    """

    webhook_id: str
    endpoint_id: str | None
    outcome: Outcome
    detail: str = ""
    next_attempt_at: float = 0.0
    received_at: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures, and the age that makes a dead letter."""

    initial: float
    maximum: float
    max_age: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1 s, 2 s, 4 s, ... capped)."""
        return min(self.initial * 2.0 ** min(failures - 1, 62), self.maximum)
