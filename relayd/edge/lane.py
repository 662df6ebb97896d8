"""`Lane`: one endpoint's dispatch state on one hub connection.

What is in flight (in send order), where the next read starts, and the acks still owed
for copies a rewind dropped. It lives on the connection, so a replaced or stale
connection takes its in-flight set with it and the webhooks are read again, in order,
from the database for the next one.

The cursor normally only moves forward; it moves back on a transient failure
(`rewind_to`) and on an operator's retry (`reread_from`). A read from below then meets
webhooks already sent on this connection, still pending in the database: those in
flight, and those whose success ack arrived but is not yet written (`release_head`).
`is_sent` tells the dispatcher to pass over them rather than send them twice.
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
    # seq of the last webhook handed to the hub (or passed over); the next read starts
    # after it.
    cursor: int = 0
    # Bumped when the cursor is rewound, so a round that read rows before the rewind
    # does not send them.
    generation: int = 0
    # Nothing of this endpoint is pending in the database after the cursor (the last read
    # came back short, and what was stored since was handed over in memory): a round
    # need not read it. Cleared by a move back and by anything not handed over.
    caught_up: bool = False
    # Webhooks dropped from in_flight by a rewind whose ack (for that earlier copy) is
    # still to come: the next ack naming one belongs to the old copy, not the resent one.
    orphans: Counter[str] = field(default_factory=Counter)
    _ids: set[str] = field(default_factory=set)
    # Released on the arrival of their success ack, until the ack writer has applied it.
    _settling: set[str] = field(default_factory=set)

    def push(self, webhook: StoredWebhook) -> None:
        """``webhook`` was handed to the hub."""
        self.in_flight.append(webhook)
        self._ids.add(webhook.id)
        self.cursor = webhook.seq

    def holds(self, webhook_id: str) -> bool:
        return webhook_id in self._ids

    def is_sent(self, webhook_id: str) -> bool:
        """In flight, or delivered with the ack not yet written: not to be sent again."""
        return webhook_id in self._ids or webhook_id in self._settling

    def release_head(self, webhook_id: str) -> bool:
        """On a success ack's arrival: free the oldest in-flight webhook if it is
        ``webhook_id`` (not an old copy's ack). It stays `is_sent` until `settled`."""
        if self._pop_head(webhook_id):
            self._settling.add(webhook_id)
            return True
        return False

    def settled(self, webhook_id: str) -> None:
        """The ack writer has applied an ack for ``webhook_id``."""
        self._settling.discard(webhook_id)

    def _pop_head(self, webhook_id: str) -> bool:
        if self.in_flight and self.in_flight[0].id == webhook_id \
                and not self.orphans[webhook_id]:
            self._ids.discard(self.in_flight.popleft().id)
            return True
        return False

    def release(self, webhook_id: str) -> None:
        """Free ``webhook_id`` (its ack is applied) wherever it is in the window."""
        if not self._pop_head(webhook_id):
            index = next(i for i, w in enumerate(self.in_flight) if w.id == webhook_id)
            del self.in_flight[index]
            self._ids.discard(webhook_id)

    def rewind_to(self, webhook_id: str) -> None:
        """``webhook_id`` and everything sent after it go back to pending, in order.

        The later ones' acks (for these copies) are still to come: they become orphans.
        One sent later may come earlier in seq order (a retried webhook): the next read
        starts at the lowest.
        """
        seqs = []
        while self.in_flight[-1].id != webhook_id:
            dropped = self.in_flight.pop()
            self._ids.discard(dropped.id)
            self.orphans[dropped.id] += 1
            seqs.append(dropped.seq)
        webhook = self.in_flight.pop()
        self._ids.discard(webhook_id)
        self.reread_from(min([webhook.seq, *seqs]))

    def reread_from(self, seq: int) -> None:
        """The next read starts at ``seq`` (if it is behind the cursor), and what a round
        read before this is not sent."""
        self.cursor = min(self.cursor, seq - 1)
        self.generation += 1
        self.caught_up = False

    def pass_over(self, webhook: StoredWebhook) -> None:
        """``webhook``, read again after a move back, `is_sent`: the read goes on after it."""
        self.cursor = webhook.seq

    def consume_orphan(self, webhook_id: str) -> bool:
        """True (and forget it) if an ack for ``webhook_id`` belongs to a dropped copy."""
        if not self.orphans[webhook_id]:
            return False
        self.orphans[webhook_id] -= 1
        if not self.orphans[webhook_id]:
            del self.orphans[webhook_id]
        return True
