"""Logging: one line per event to stderr, ``key=value`` ids in the message."""

from __future__ import annotations

import logging
import sys

__all__ = ["DEFAULT_LEVEL", "LEVELS", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# the daemons' --log-level choices and default
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LEVEL = "INFO"


def setup_logging(level: str = DEFAULT_LEVEL) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # purerpc logs every dropped connection at WARNING with a traceback at DEBUG; relayd
    # logs connection ends itself with the hub id.
    logging.getLogger("purerpc").setLevel(logging.ERROR)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    # relay-hub logs one line per delivery itself; httpx would add a second one.
    logging.getLogger("httpx").setLevel(logging.WARNING)
