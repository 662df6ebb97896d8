"""Heartbeats out and the stale watchdog, on the mock clock with exact times."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relayd.common.heartbeat import StaleWatchdog, send_heartbeats
from relayd.wire import pb


class Fired:
    """An ``on_stale`` callback that records when it was called."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(trio.current_time())


async def touch_at(watchdog: StaleWatchdog, times: list[float]) -> None:
    for t in times:
        await trio.sleep_until(t)
        watchdog.touch()


async def test_stale_watchdog_fires_exactly_timeout_after_start_without_a_touch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired = Fired()
    await StaleWatchdog(60, fired).run()
    assert fired.at == [60.0]


async def test_stale_watchdog_touch_pushes_firing_to_exactly_touch_plus_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired = Fired()
    watchdog = StaleWatchdog(60, fired)
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog.run)
        await touch_at(watchdog, [25.0])
    assert fired.at == [85.0]


@pytest.mark.parametrize("touches", [
    [3.5],  # within 1/16 of the timeout of the start
    [30.0, 33.5],  # within 1/16 of the timeout of the previous touch
    [float(t) for t in range(1, 100)],  # one a second
])
async def test_stale_watchdog_never_fires_before_timeout_of_silence(
    autojump_clock: trio.testing.MockClock, touches: list[float],
) -> None:
    fired = Fired()
    watchdog = StaleWatchdog(60, fired)
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog.run)
        await touch_at(watchdog, touches)
    assert fired.at == [touches[-1] + 60]


async def test_stale_watchdog_is_quiet_while_touched_every_half_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired = Fired()
    watchdog = StaleWatchdog(60, fired)
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog.run)
        await touch_at(watchdog, [30.0, 60.0, 90.0])
        assert fired.at == []
    assert fired.at == [150.0]


async def test_cancelled_stale_watchdog_does_not_fire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired = Fired()
    with trio.move_on_after(59):
        await StaleWatchdog(60, fired).run()
    await trio.sleep(10)
    assert fired.at == []


async def test_heartbeats_are_sent_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[tuple[float, pb.StreamResponse]] = []

    async def send(message: pb.StreamResponse) -> None:
        sent.append((trio.current_time(), message))

    with trio.move_on_after(95):
        await send_heartbeats(send, 30, pb.StreamResponse)
    assert [t for t, _ in sent] == [30.0, 60.0, 90.0]
    assert all(m.WhichOneof("message") == "heartbeat" for _, m in sent)
