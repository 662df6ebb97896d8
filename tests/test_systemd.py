"""The systemd watchdog ping comes from the event loop, so a wedged loop stops it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import trio

from relayd.common import systemd


async def test_watchdog_pings_stop_while_the_event_loop_is_wedged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "100000")
        interval = systemd.watchdog_interval()
        assert interval == pytest.approx(0.05)
        pings: list[float] = []

        async def collect() -> None:
            while True:
                await trio.lowlevel.wait_readable(notify)
                assert notify.recv(64) == b"WATCHDOG=1"
                pings.append(time.monotonic())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            nursery.start_soon(systemd.watchdog_pings, interval)
            await trio.sleep(0.3)
            wedged_at = time.monotonic()
            time.sleep(0.6)  # noqa: ASYNC251 - on purpose: the event loop is wedged
            resumed_at = time.monotonic()
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    before = [t for t in pings if t < wedged_at]
    during = [t for t in pings if wedged_at <= t < resumed_at]
    after = [t for t in pings if t >= resumed_at]
    assert len(before) >= 4 and len(after) >= 4
    assert during == []  # no ping while wedged: systemd's WatchdogSec would restart it


def test_watchdog_is_off_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert systemd.watchdog_interval() is None
