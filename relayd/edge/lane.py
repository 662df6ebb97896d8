"""`Lane`: one endpoint's dispatch state on one hub connection.

What is in flight (in send order), where the next read starts, and the acks still owed
for copies a rewind dropped. It lives on the connection, so a replaced or stale
connection takes its in-flight set with it and the webhooks are read again, in order,
from the database for the next one.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from relayd.edge.store import StoredWebhook

__all__ = ["Lane"]


@dataclass
class Lane:
    """Dispatch state of one endpoint on one connection: what is in flight, in send order."""

    in_flight: deque[StoredWebhook] = field(default_factory=deque)
    # seq of the last webhook handed to the hub; the next read starts after it.
    cursor: int = 0
    # Bumped when the cursor is rewound, so a round that read rows before the rewind
    # does not send them.
    generation: int = 0
    # Webhooks dropped from in_flight by a rewind whose ack (for that earlier copy) is
    # still to come: the next ack naming one belongs to the old copy, not the resent one.
    orphans: Counter[str] = field(default_factory=Counter)
    _ids: set[str] = field(default_factory=set)

    def push(self, webhook: StoredWebhook) -> None:
        """``webhook`` was handed to the hub."""
        self.in_flight.append(webhook)
        self._ids.add(webhook.id)
        self.cursor = webhook.seq

    def holds(self, webhook_id: str) -> bool:
        return webhook_id in self._ids

    def release_head(self, webhook_id: str) -> bool:
        """Free the oldest in-flight webhook if it is ``webhook_id`` (not an old copy's ack)."""
        if self.in_flight and self.in_flight[0].id == webhook_id \
                and not self.orphans[webhook_id]:
            self._ids.discard(self.in_flight.popleft().id)
            return True
        return False

    def release(self, webhook_id: str) -> None:
        """Free ``webhook_id`` wherever it is in the window."""
        if not self.release_head(webhook_id):
            index = next(i for i, w in enumerate(self.in_flight) if w.id == webhook_id)
            del self.in_flight[index]
            self._ids.discard(webhook_id)

    def rewind_to(self, webhook_id: str) -> None:
        """``webhook_id`` and everything sent after it go back to pending, in order.

        The later ones' acks (for these copies) are still to come: they become orphans.
        """
        while self.in_flight[-1].id != webhook_id:
            dropped = self.in_flight.pop()
            self._ids.discard(dropped.id)
            self.orphans[dropped.id] += 1
        webhook = self.in_flight.pop()
        self._ids.discard(webhook_id)
        self.cursor = webhook.seq - 1
        self.generation += 1

    def consume_orphan(self, webhook_id: str) -> bool:
        """True (and forget it) if an ack for ``webhook_id`` belongs to a dropped copy."""
        if not self.orphans[webhook_id]:
            return False
        self.orphans[webhook_id] -= 1
        if not self.orphans[webhook_id]:
            del self.orphans[webhook_id]
        return True
