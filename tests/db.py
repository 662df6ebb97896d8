"""A plain SQLite connection to a relayd database, for tests that look behind the API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["V3_SCHEMA", "open_db", "write_v3_database"]


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


# The schema as relayd with SCHEMA_VERSION = 3 left it (relayd/edge/store/schema.py then).
V3_SCHEMA = """
CREATE TABLE webhooks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint_id TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead_letter')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    last_status_code INTEGER,
    delivered_at REAL,
    updated_at REAL NOT NULL,
    envelope_head BLOB,
    path TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    remote_addr TEXT NOT NULL DEFAULT ''
);
CREATE INDEX webhooks_pending_by_endpoint ON webhooks (endpoint_id, seq)
    WHERE status = 'pending';
CREATE INDEX webhooks_by_status ON webhooks (status, received_at);
PRAGMA user_version = 3;
"""


def write_v3_database(path: Path, rows: list[dict[str, object]]) -> None:
    """A database as relayd at schema 3 left it, holding ``rows`` (columns: values; the
    ones not given get plain defaults)."""
    with open_db(path) as db:
        db.executescript(V3_SCHEMA)
        for row in rows:
            full = {"method": "POST", "headers": json.dumps([]), "body": b"x",
                    "received_at": 1000.0, "attempts": 0, "next_attempt_at": 0.0,
                    "updated_at": 1000.0, **row}
            db.execute(f"INSERT INTO webhooks ({', '.join(full)}) "
                       f"VALUES ({', '.join('?' * len(full))})", tuple(full.values()))
