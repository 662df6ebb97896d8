"""Liveness of a hub connection: periodic heartbeats out, a stale watchdog in.

`send_heartbeats` pushes a Heartbeat every interval. `StaleWatchdog` is a cancel scope
whose deadline every message from the hub pushes forward; when it expires the hub has
been silent for ``stale_timeout`` and the watchdog calls its ``on_stale`` callback.
Both use `trio.current_time`, so tests drive them with `autojump_clock`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from relayd.wire import pb

__all__ = ["StaleWatchdog", "heartbeat", "send_heartbeats"]

M = TypeVar("M", pb.StreamRequest, pb.StreamResponse)


def heartbeat() -> pb.Heartbeat:
    return pb.Heartbeat(timestamp=int(time.time()))


async def send_heartbeats(send: Callable[[M], Awaitable[None]], interval: float,
                          wrap: Callable[..., M]) -> None:
    """Send ``wrap(heartbeat=Heartbeat(now))`` every ``interval`` seconds, forever.

    ``wrap`` is the message type of this side: `pb.StreamResponse` on the edge,
    `pb.StreamRequest` on the hub.
    """
    while True:
        await trio.sleep(interval)
        await send(wrap(heartbeat=heartbeat()))


class StaleWatchdog:
    """Calls ``on_stale`` when `touch` has not been called for ``timeout`` seconds."""

    def __init__(self, timeout: float, on_stale: Callable[[], None]) -> None:
        self._timeout = timeout
        self._on_stale = on_stale
        self._scope = trio.CancelScope()
        # Moving a cancel scope's deadline costs trio a heap update; a touch per message
        # at thousands of messages/s adds up. The deadline is only moved when it would
        # move by more than this, so staleness is detected at most 1/16 late.
        self._slack = timeout / 16

    def touch(self) -> None:
        """The peer proved it is alive: push the deadline forward."""
        deadline = trio.current_time() + self._timeout
        if deadline - self._scope.deadline > self._slack:
            self._scope.deadline = deadline

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._scope.deadline = trio.current_time() + self._timeout
        with self._scope:
            task_status.started()
            await trio.sleep_forever()
        if self._scope.cancelled_caught:
            self._on_stale()
