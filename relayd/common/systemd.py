"""systemd integration: ``sd_notify`` (READY=1, STOPPING=1) and the watchdog ping.

Does nothing when not started by systemd (no ``NOTIFY_SOCKET``). The watchdog ping runs
on the event loop, so a wedged loop stops pinging and systemd restarts relayd.
"""

from __future__ import annotations

import logging
import os
import socket

import trio

__all__ = ["notify", "watchdog_interval", "watchdog_pings"]

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` to systemd; return False when there is no notify socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None if the watchdog is off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


async def watchdog_pings(interval: float) -> None:
    """Ping the systemd watchdog every ``interval`` seconds, forever."""
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
