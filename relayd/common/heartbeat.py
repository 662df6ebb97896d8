"""Liveness of a hub connection: periodic heartbeats out, a stale watchdog in.

`send_heartbeats` pushes a Heartbeat every interval. `StaleWatchdog` calls its
``on_stale`` callback once the peer has been silent for ``stale_timeout``: never earlier,
and later only by the scheduling delay of its task. Both use `trio.current_time`, so
tests drive them with `autojump_clock`.
"""

from __future__ import annotations

import math
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
        self._last_touch = -math.inf  # `run` starts the clock

    def touch(self) -> None:
        """The peer proved it is alive: staleness is now ``timeout`` from now."""
        # Called per message, thousands of times a second: only a clock read and a store.
        # Moving a cancel scope's deadline here would cost trio a heap update each time.
        self._last_touch = trio.current_time()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for ``timeout`` seconds without a touch, call ``on_stale``, return.

        The task sleeps until the deadline the last touch it saw implies and re-arms
        when touches moved it meanwhile: at most one wake-up per ``timeout`` while the
        peer talks. Cancelling it stops the watch without calling ``on_stale``.
        """
        self._last_touch = trio.current_time()
        task_status.started()
        deadline = self._last_touch + self._timeout
        while trio.current_time() < deadline:
            await trio.sleep_until(deadline)
            deadline = self._last_touch + self._timeout  # later if touched meanwhile
        self._on_stale()
