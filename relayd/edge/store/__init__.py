"""The durable webhook store: one SQLite file in WAL mode, reached through sqlite-utils.

- `store`: the `Store` class, the one interface the rest of the edge uses;
- `records`: the values it takes and returns;
- `schema`: tables, migrations, connection settings (``synchronous=FULL``);
- `acks`: the ack state machine (pending -> delivered / failed / dead letter, retries);
- `queries`: the reads (what to dispatch next, status counts);
- `retention`: deleting final webhooks kept long enough, handing their space back.

Durability: every commit is fsynced before the ingress answers 202, so an acknowledged
webhook survives a power loss, not just a process crash; group commit keeps the fsync
cost per batch, not per webhook.
"""

from relayd.edge.store.records import (
    STATUSES,
    AckOutcome,
    AckRecord,
    NewWebhook,
    RetryPolicy,
    StoredWebhook,
)
from relayd.edge.store.store import Store, retry_policy

__all__ = [
    "STATUSES",
    "AckOutcome",
    "AckRecord",
    "NewWebhook",
    "RetryPolicy",
    "Store",
    "StoredWebhook",
    "retry_policy",
]
