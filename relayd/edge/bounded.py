"""`serve_bounded`: `trio.serve_listeners` with at most N connections open at once.

Each accepted connection costs a file descriptor and memory, so a public listener must
not take every connection offered. At the limit relayd stops calling ``accept``: further
connections wait in the kernel's listen backlog and are served, in order, as open ones
close. That is how trio treats running out of descriptors, and it keeps a burst of
webhooks waiting briefly instead of failing it; refusing (accept, then close) would turn
every burst over the limit into errors and still spend a syscall and a descriptor per
refused connection. Slots cannot be held forever: idle and slow connections are cut by
the listener's timeouts. When the backlog is full too, the kernel drops new SYNs and
clients retransmit: back-pressure reaches the senders.

Errors of ``accept`` pass through unchanged, so trio's handling of EMFILE, ENFILE,
ENOMEM and ENOBUFS (log, sleep, retry) still applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio

__all__ = ["serve_bounded"]


class _SlotListener(trio.abc.Listener[trio.SocketStream]):
    """``accept`` takes a slot first, so nothing is accepted while all slots are in use."""

    def __init__(self, inner: trio.SocketListener, slots: trio.Semaphore) -> None:
        self._inner = inner
        self._slots = slots

    async def accept(self) -> trio.SocketStream:
        await self._slots.acquire()
        try:
            return await self._inner.accept()
        except BaseException:  # EMFILE, cancellation...: no connection, so no slot
            self._slots.release()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _serve_in_slot(handler: Callable[[trio.SocketStream], Awaitable[object]],
                         slots: trio.Semaphore, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        try:
            # a slot stands for a descriptor: free it only once the socket is closed
            await trio.aclose_forcefully(stream)
        finally:
            slots.release()


async def serve_bounded(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    listeners: list[trio.SocketListener],
    *,
    max_connections: int,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``handler(stream)`` in ``handler_nursery`` for each connection accepted on
    ``listeners``, with at most ``max_connections`` handlers running (all listeners
    together). Closes the listeners when cancelled. Never returns otherwise."""
    slots = trio.Semaphore(max_connections)
    bounded = [_SlotListener(listener, slots) for listener in listeners]
    await trio.serve_listeners(partial(_serve_in_slot, handler, slots), bounded,
                               handler_nursery=handler_nursery, task_status=task_status)
