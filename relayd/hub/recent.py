"""A bounded memory of recently delivered webhook ids, to re-ack redeliveries."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RecentIds"]


class RecentIds:
    """The last ``capacity`` ids added; the oldest is forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, webhook_id: str) -> None:
        self._ids[webhook_id] = None
        self._ids.move_to_end(webhook_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def __contains__(self, webhook_id: object) -> bool:
        return webhook_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
