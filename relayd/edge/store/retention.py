"""Retention SQL: deleting final webhooks kept long enough, and giving their space back.

Plain functions on a connection, like `acks` and `queries`. A webhook is final once it is
``delivered`` (since ``delivered_at``), ``failed`` or ``dead_letter`` (since
``updated_at``, which the ack or the expiry that made it final set); ``pending`` rows are
never deleted here. Each status has a partial index on the time it became final
(`INDEXES`), so a round finds its expired rows without reading the ones still kept.

Space: a database created by this relayd has ``auto_vacuum = INCREMENTAL`` (set by
`relayd.edge.store.schema.connect` before the first table exists), so `reclaim_space` can
hand freed pages back to the file system. A database created earlier keeps
``auto_vacuum = NONE``: deleted rows' pages are reused by new rows (the file stops
growing) but the file does not shrink until an offline ``VACUUM``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import NamedTuple

from relayd.edge.store.records import DEAD_LETTER, DELIVERED, FAILED

__all__ = ["FINAL_AT", "INDEXES", "Space", "delete_expired", "reclaim_space", "space"]

# Each final status and the column holding when the webhook became final.
FINAL_AT = {DELIVERED: "delivered_at", FAILED: "updated_at", DEAD_LETTER: "updated_at"}

# One partial index per final status: SQLite uses a partial index only when the query
# repeats its WHERE term literally, so the statuses are literals in the SQL below too.
INDEXES = tuple(
    f"CREATE INDEX IF NOT EXISTS webhooks_{status}_by_final_time "
    f"ON webhooks (status, {column}) WHERE status = '{status}'"
    for status, column in FINAL_AT.items()
)

# PRAGMA auto_vacuum values.
AUTO_VACUUM_INCREMENTAL = 2


class Space(NamedTuple):
    """How the database file is used (``PRAGMA`` page counts)."""

    page_size: int
    page_count: int  # pages in the database, free ones included
    freelist_count: int  # free pages: reused by new rows, or handed back by `reclaim_space`
    incremental: bool  # whether ``auto_vacuum = INCREMENTAL`` (else free pages stay in the file)

    @property
    def size_bytes(self) -> int:
        return self.page_size * self.page_count


def delete_expired(conn: sqlite3.Connection, cutoffs: Mapping[str, float], limit: int,
                   max_bytes: int) -> dict[str, int]:
    """Delete at most ``limit`` webhooks in the caller's transaction; counts per status.

    ``cutoffs`` maps a final status to a Unix time: its rows that became final at or
    before that time are deleted (statuses left out are kept). Oldest first, in the order
    of `FINAL_AT`. Bodies add up to at most ``max_bytes`` (deleting a large body reads its
    pages), except that one row always goes, whatever its size. Raises `ValueError` for
    ``pending`` or an unknown status.
    """
    unknown = set(cutoffs) - set(FINAL_AT)
    if unknown:
        raise ValueError(f"only final webhooks are deleted, not {sorted(unknown)}")
    deleted = dict.fromkeys(cutoffs, 0)
    rows_left, bytes_left = limit, max_bytes
    for status, column in FINAL_AT.items():
        if status not in cutoffs or rows_left <= 0 or bytes_left <= 0:
            continue
        # length() of a blob is in the row's header: the body itself is not read here
        candidates = conn.execute(
            f"SELECT seq, length(body) FROM webhooks WHERE status = '{status}' "
            f"AND {column} <= ? ORDER BY {column} LIMIT ?",
            (cutoffs[status], rows_left),
        ).fetchall()
        chosen: list[int] = []
        for seq, size in candidates:
            if size > bytes_left and (chosen or bytes_left < max_bytes):
                bytes_left = 0  # full: the next statuses wait for the next transaction
                break
            chosen.append(seq)
            bytes_left -= size
        if chosen:  # else no write at all: a round with nothing to delete takes no lock
            deleted[status] = conn.execute(
                "DELETE FROM webhooks WHERE seq IN (SELECT value FROM json_each(?))",
                (json.dumps(chosen),),
            ).rowcount
            rows_left -= deleted[status]
    return deleted


def reclaim_space(conn: sqlite3.Connection, max_pages: int, spare: float) -> int:
    """Hand free pages back to the file system beyond ``spare`` (a fraction of the
    database's pages), at most ``max_pages``, in a transaction of its own; return the
    bytes handed back (0: nothing left to do). Nothing happens without
    ``auto_vacuum = INCREMENTAL``.

    The spare pages are for the next rows: handing back every free page would make SQLite
    move live pages into the holes at each round, only for new rows to grow the file
    again. Not inside a transaction: it commits one that is open.
    """
    before = space(conn)
    excess = before.freelist_count - int(before.page_count * spare)
    if not before.incremental or excess <= 0:
        return 0
    # executescript, not execute: the pragma frees one page per step, and sqlite3's
    # execute() steps a statement that returns no columns only once.
    conn.executescript(f"PRAGMA incremental_vacuum({min(int(max_pages), excess)})")
    after = space(conn)
    return (before.page_count - after.page_count) * after.page_size


def space(conn: sqlite3.Connection) -> Space:
    """The page size and counts of the database ``conn`` is on."""
    def pragma(name: str) -> int:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])

    return Space(pragma("page_size"), pragma("page_count"), pragma("freelist_count"),
                 pragma("auto_vacuum") == AUTO_VACUUM_INCREMENTAL)
