"""A plain SQLite connection to a relayd database, for tests that look behind the API."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["open_db"]


@contextmanager
def open_db(path: Path) -> Iterator[sqlite3.Connection]:
    """An autocommit connection to ``path``, closed on exit.

    (``with sqlite3.connect(...)`` only ends a transaction; it never closes the connection,
    which Python 3.13 reports as a ResourceWarning.)
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()
