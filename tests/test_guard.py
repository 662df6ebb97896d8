"""PeerGuard's accounting intervals, driven through `PeerGuard.run` on the mock clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from relayd.transport.guard import PeerGuard

PEER = "192.0.2.9"


class _LogTimes(logging.Handler):
    """Records ``(trio time, message)`` of each log line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        # drop the "(further ones ... summarised every 10s)" tail of first-time lines
        self.lines.append((trio.current_time(), record.getMessage().split(" (further")[0]))


@pytest.fixture
def guard_log() -> Iterator[list[tuple[float, str]]]:
    handler = _LogTimes()
    logger = logging.getLogger("relayd.transport.guard")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def fail(guard: PeerGuard, times: int) -> None:
    for _ in range(times):
        guard.failure(PEER, "auth", "hub authentication failed peer=%s", PEER)


async def test_failures_are_logged_once_then_summarised_exactly_at_the_interval_end(
    autojump_clock: trio.testing.MockClock, guard_log: list[tuple[float, str]],
) -> None:
    guard = PeerGuard(max_connections=10, max_per_peer=10, failures_per_interval=30, interval=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        await trio.sleep(3)
        fail(guard, 5)
        await trio.sleep_until(12)
        fail(guard, 1)  # a new interval: logged again, and alone it needs no summary
        await trio.sleep_until(35)
        nursery.cancel_scope.cancel()
    assert guard_log == [
        (3.0, f"hub authentication failed peer={PEER}"),
        (10.0, f"grpc peer summary peer={PEER} failures=5 refused=0 last_failure=auth "
               "in the last 10s"),
        (12.0, f"hub authentication failed peer={PEER}"),
    ]


async def test_peer_refused_for_failures_is_admitted_again_when_the_interval_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guard = PeerGuard(max_connections=10, max_per_peer=10, failures_per_interval=3,
                      interval=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        fail(guard, 3)
        assert not guard.admit(PEER)
        await trio.sleep_until(9.5)
        assert not guard.admit(PEER)
        await trio.sleep_until(10)
        await trio.testing.wait_all_tasks_blocked()  # the guard's own wake-up at 10 runs first
        assert guard.admit(PEER) and trio.current_time() == 10.0
        nursery.cancel_scope.cancel()
