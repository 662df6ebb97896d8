"""``relayd --config PATH``: run the edge daemon until SIGTERM/SIGINT.

Exit codes: 0 after a graceful stop, 2 for a configuration error (the message names the
key), 1 when the daemon could not start (e.g. a port already in use, an unusable store).
A second SIGTERM/SIGINT during the graceful stop ends it at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator

import trio

from relayd.config import ConfigError, load_config
from relayd.daemon import Relayd
from relayd.logs import setup_logging

__all__ = ["main"]

log = logging.getLogger("relayd")


async def _handle_signals(signals: AsyncIterator[int], daemon: Relayd,
                          hard_stop: trio.CancelScope) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if daemon.shutdown_requested:
            log.warning("received %s again: stopping now", name)
            hard_stop.cancel()
            return
        log.info("received %s: stopping gracefully", name)
        daemon.request_shutdown()


async def _run(daemon: Relayd) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_handle_signals, signals, daemon, nursery.cancel_scope)
            await daemon.run()
            nursery.cancel_scope.cancel()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relayd", description="relayd: webhook relay edge")
    parser.add_argument("--config", required=True, help="path to relayd.toml")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"relayd: configuration error: {exc}", file=sys.stderr)
        return 2
    code = 0
    try:
        trio.run(_run, Relayd(config))
    except* (OSError, sqlite3.Error) as group:
        for exc in _leaves(group):
            log.error("relayd could not run: %s: %s", type(exc).__name__, exc)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
