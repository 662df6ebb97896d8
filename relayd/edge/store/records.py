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
    "RETRYABLE",
    "STATUSES",
    "AckOutcome",
    "AckRecord",
    "EndpointState",
    "LastError",
    "NewWebhook",
    "Outcome",
    "Requeued",
    "RetryPolicy",
    "StoredWebhook",
    "WebhookDetail",
    "WebhookInfo",
]

PENDING, DELIVERED, FAILED, DEAD_LETTER = "pending", "delivered", "failed", "dead_letter"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD_LETTER)
# What an operator's retry takes: a pending webhook waiting out a backoff, or a final
# failure. A delivered one is replayed instead (a new webhook), never resent as itself.
RETRYABLE = (PENDING, FAILED, DEAD_LETTER)


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
    replay_of: str | None = None  # the webhook this one copies (an operator's replay)


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


class WebhookInfo(NamedTuple):
    """A webhook as the admin API lists it (no headers, no body)."""

    seq: int
    id: str
    endpoint_id: str
    method: str
    path: str
    query: str
    status: str
    attempts: int
    received_at: float
    last_attempt_at: float | None
    next_attempt_at: float  # 0: none scheduled
    last_status_code: int | None  # 0: no HTTP answer (connection error, timeout)
    last_error: str | None
    size: int
    replay_of: str | None


class WebhookDetail(NamedTuple):
    """One webhook in full: its `WebhookInfo` and what it carries."""

    info: WebhookInfo
    headers: tuple[tuple[str, str], ...]
    body: bytes
    remote_addr: str
    delivered_at: float | None


class LastError(NamedTuple):
    """The newest failed attempt (or expiry) recorded for an endpoint."""

    webhook_id: str
    at: float
    status_code: int | None
    message: str


class EndpointState(NamedTuple):
    """One endpoint's queue as the database knows it (in flight is the dispatcher's)."""

    counts: dict[str, int]  # per status; pending includes what is in flight
    head_received_at: float | None  # arrival of its first pending webhook, in send order
    next_attempt_at: float | None  # earliest backoff still running
    last_delivered_at: float | None
    last_error: LastError | None


class Requeued(NamedTuple):
    """A webhook an operator's retry made pending (again, or without its backoff)."""

    id: str
    endpoint_id: str
    seq: int
    previous_status: str
