"""The durable webhook store: one SQLite file in WAL mode, reached through sqlite-utils.

- `store`: the `Store` class, the one interface the rest of the edge uses;
- `records`: the values it takes and returns;
- `schema`: tables, migrations, connection settings (``synchronous=FULL``);
- `acks`: the ack state machine (pending -> delivered / failed / dead letter, retries);
- `requeue`: an operator's retry (the same webhook again) and replay (a copy);
- `stats`: per-endpoint last delivery and last error, written with the acks;
- `queries`: the reads (what to dispatch next, status counts, listings);
- `retention`: deleting final webhooks kept long enough, handing their space back.

Durability: every commit is fsynced before the ingress answers 202, so an acknowledged
webhook survives a power loss, not just a process crash; group commit keeps the fsync
cost per batch, not per webhook.
"""

from relayd.edge.store.records import (
    DEAD_LETTER,
    DELIVERED,
    FAILED,
    PENDING,
    RETRYABLE,
    STATUSES,
    AckOutcome,
    AckRecord,
    EndpointState,
    LastError,
    NewWebhook,
    Requeued,
    RetryPolicy,
    StoredWebhook,
    WebhookDetail,
    WebhookInfo,
)
from relayd.edge.store.store import Store, retry_policy

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
    "Requeued",
    "RetryPolicy",
    "Store",
    "StoredWebhook",
    "WebhookDetail",
    "WebhookInfo",
    "retry_policy",
]
