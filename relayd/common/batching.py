"""Take what is already queued on a channel, to process it as one batch."""

from __future__ import annotations

from typing import TypeVar

import trio

__all__ = ["take_batch"]

T = TypeVar("T")


def take_batch(first: T, receive: trio.MemoryReceiveChannel[T], max_items: int) -> list[T]:
    """``first`` plus whatever ``receive`` holds right now, up to ``max_items`` in all."""
    batch = [first]
    while len(batch) < max_items:
        try:
            batch.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch
