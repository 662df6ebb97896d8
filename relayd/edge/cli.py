"""``relayd --config PATH``: run the edge daemon until SIGTERM/SIGINT.

Exit codes: 0 after a graceful stop, 2 for a configuration error (the message names the
key), 1 when the daemon could not start (e.g. a port already in use, an unusable store).
A second SIGTERM/SIGINT during the graceful stop ends it at once.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

import trio

from relayd.common.logs import setup_logging
from relayd.common.runner import describe, leaves, run_until_signalled
from relayd.edge.config import ConfigError, load_config
from relayd.edge.daemon import Relayd

__all__ = ["main"]

log = logging.getLogger("relayd")


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
    daemon = Relayd(config)
    code = 0
    try:
        trio.run(run_until_signalled, daemon.run, daemon.request_shutdown)
    except* (OSError, sqlite3.Error) as group:
        for error in leaves(group):
            log.error("relayd could not run: %s", describe(error))
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
