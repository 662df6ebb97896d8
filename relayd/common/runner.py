"""Running a daemon under signals, shared by ``relayd`` and ``relay-hub``.

The first SIGTERM/SIGINT asks for a graceful stop; a second one cancels at once. SIGHUP,
when the daemon has a ``reload``, calls it (certificates renewed, config changed).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

__all__ = ["describe", "leaves", "run_until_signalled"]

log = logging.getLogger("relayd.common.runner")


async def run_until_signalled(run: Callable[[], Awaitable[None]],
                              request_stop: Callable[[], None],
                              reload: Callable[[], None] | None = None) -> None:
    """Run ``run()``; on the first stop signal call ``request_stop``, on the second cancel;
    on SIGHUP call ``reload`` (without one, SIGHUP keeps its default: the process ends)."""
    wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if reload else [])
    with trio.open_signal_receiver(*wanted) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, signals, request_stop, reload,
                               nursery.cancel_scope)
            await run()
            nursery.cancel_scope.cancel()


async def _on_signals(signals: AsyncIterator[int], request_stop: Callable[[], None],
                      reload: Callable[[], None] | None, hard_stop: trio.CancelScope) -> None:
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP and reload is not None:
            if not stopping:
                log.info("received SIGHUP: reloading")
                reload()
            continue
        if stopping:
            log.warning("received %s again: stopping now", name)
            hard_stop.cancel()
            return
        log.info("received %s: stopping gracefully", name)
        stopping = True
        request_stop()


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (itself if it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, for a log."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}".replace("\n", " ")[:300]
