"""The SQLite schema, its migrations, and how relayd opens a connection to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from relayd.edge.store import retention
from relayd.edge.store.records import STATUSES

__all__ = ["SCHEMA_VERSION", "connect", "migrate"]

SCHEMA_VERSION = 5


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection usable from worker threads, fsyncing every commit.

    ``synchronous=FULL``: an acknowledged webhook survives a power loss, not only a
    process crash. ``busy_timeout`` is how long it waits on a lock held by another
    process before the statement fails. A new database gets ``auto_vacuum=INCREMENTAL``.
    """
    # SQLite writes nothing into a new file before its first table (or WAL mode) is set.
    new = not path.exists() or path.stat().st_size == 0
    conn = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout)
    try:
        if new:
            # Only possible before the first table: retention can then give deleted rows'
            # space back. An existing database keeps its mode (no VACUUM: see `retention`).
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(db: sqlite_utils.Database) -> None:
    """Create the schema, or upgrade it step by step using ``PRAGMA user_version``."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this relayd ({SCHEMA_VERSION})"
        )
    if version < 1:
        with db.atomic():
            db.execute(
                """
                CREATE TABLE IF NOT EXISTS webhooks (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order
                    id TEXT NOT NULL UNIQUE,
                    endpoint_id TEXT NOT NULL,
                    method TEXT NOT NULL,
                    headers TEXT NOT NULL,                  -- JSON [[name, value], ...]
                    body BLOB NOT NULL,
                    received_at REAL NOT NULL,              -- Unix seconds
                    status TEXT NOT NULL CHECK (status IN
                        ('pending', 'delivered', 'failed', 'dead_letter')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL DEFAULT 0,
                    last_error TEXT,
                    last_status_code INTEGER,
                    delivered_at REAL,
                    updated_at REAL NOT NULL
                )
                """
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS webhooks_pending_by_endpoint "
                "ON webhooks (endpoint_id, seq) WHERE status = 'pending'"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS webhooks_by_status ON webhooks (status, received_at)"
            )
            db.execute("PRAGMA user_version = 1")
    if version < 2:
        with db.atomic():
            db.execute("ALTER TABLE webhooks ADD COLUMN envelope_head BLOB")
            db.execute("PRAGMA user_version = 2")
    if version < 3:
        with db.atomic():
            # The request line beyond the method (relayd.edge.ingress): path and query are
            # latin-1 text of the received bytes. Rows from before have none: "" is what
            # the hub reads as "the destination as configured".
            for column in ("path", "query", "remote_addr"):
                db.execute(f"ALTER TABLE webhooks ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            # A v2 envelope head has no method, so the hub would POST it; a pending PUT
            # gets its head rebuilt at dispatch (from the columns) and goes as a PUT.
            db.execute("UPDATE webhooks SET envelope_head = NULL "
                       "WHERE status = 'pending' AND method != 'POST'")
            db.execute("PRAGMA user_version = 3")
    if version < 4:
        with db.atomic():
            _count_by_status(db)
            db.execute("PRAGMA user_version = 4")
    if version < 5:
        with db.atomic():
            _migrate_to_5(db)
            db.execute("PRAGMA user_version = 5")
    _retention_indexes(db)


def _count_by_status(db: sqlite_utils.Database) -> None:
    """``webhook_counts``: rows per status, kept by triggers in the writing transaction.

    Status and metrics read four rows instead of counting the table, which holds a week of
    webhooks by default (``store.keep_delivered``), or all of them (``GROUP BY status`` over
    the status index took 50-57 ms at 1M rows, every scrape).
    Triggers rather than counting in the Store: any writer keeps them right, and a
    rolled-back write rolls its counts back. Cost: about 1 us of SQLite per row written.
    """
    db.execute("CREATE TABLE webhook_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) "
               "WITHOUT ROWID")
    for status in STATUSES:
        db.execute("INSERT INTO webhook_counts (status, n) "
                   "SELECT ?, COUNT(*) FROM webhooks WHERE status = ?", (status, status))
    db.execute("CREATE TRIGGER webhooks_count_insert AFTER INSERT ON webhooks BEGIN "
               "UPDATE webhook_counts SET n = n + 1 WHERE status = NEW.status; END")
    db.execute("CREATE TRIGGER webhooks_count_delete AFTER DELETE ON webhooks BEGIN "
               "UPDATE webhook_counts SET n = n - 1 WHERE status = OLD.status; END")
    db.execute("CREATE TRIGGER webhooks_count_update AFTER UPDATE OF status ON webhooks "
               "WHEN OLD.status IS NOT NEW.status BEGIN "
               "UPDATE webhook_counts SET n = n - 1 WHERE status = OLD.status; "
               "UPDATE webhook_counts SET n = n + 1 WHERE status = NEW.status; END")


def _retention_indexes(db: sqlite_utils.Database) -> None:
    # Not a numbered step: idempotent (IF NOT EXISTS), so it needs no schema version of
    # its own, and a database from before it gets the indexes on its next start (a scan
    # of the table, once).
    with db.atomic():
        for statement in retention.INDEXES:
            db.execute(statement)


# Step 5 counts per endpoint and status (the step-4 table counted per status): the status
# of each endpoint (/api/status) reads a few rows where counting took 2 s on 1M rows. The
# upsert costs a few us per written row (a new endpoint needs its row).
COUNT_TRIGGERS = (
    """CREATE TRIGGER webhooks_count_insert AFTER INSERT ON webhooks BEGIN
        INSERT INTO webhook_counts (endpoint_id, status, n)
            VALUES (NEW.endpoint_id, NEW.status, 1)
            ON CONFLICT (endpoint_id, status) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER webhooks_count_update AFTER UPDATE OF status, endpoint_id ON webhooks
    WHEN OLD.status IS NOT NEW.status OR OLD.endpoint_id IS NOT NEW.endpoint_id BEGIN
        UPDATE webhook_counts SET n = n - 1
            WHERE endpoint_id = OLD.endpoint_id AND status = OLD.status;
        INSERT INTO webhook_counts (endpoint_id, status, n)
            VALUES (NEW.endpoint_id, NEW.status, 1)
            ON CONFLICT (endpoint_id, status) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER webhooks_count_delete AFTER DELETE ON webhooks BEGIN
        UPDATE webhook_counts SET n = n - 1
            WHERE endpoint_id = OLD.endpoint_id AND status = OLD.status;
    END""",
)


def _migrate_to_5(db: sqlite_utils.Database) -> None:
    """The operator's view: listing, retry and replay, per-endpoint status."""
    # replay_of: the webhook a replay copies. last_attempt_at: when the last ack came
    # (rows from before have none; readers fall back to updated_at). requeued_at: an
    # operator's retry restarts the max-age clock (else a retried dead letter would be
    # dead-lettered again by the next sweep).
    for column, kind in (("replay_of", "TEXT"), ("last_attempt_at", "REAL"),
                         ("requeued_at", "REAL")):
        db.execute(f"ALTER TABLE webhooks ADD COLUMN {column} {kind}")
    # Newest first with a status filter, and per endpoint (with or without a status:
    # without, the four statuses are merged in seq order, see queries.list_webhooks).
    # The second also serves the dispatcher's read, so its partial index goes.
    db.execute("CREATE INDEX webhooks_by_status_seq ON webhooks (status, seq)")
    db.execute("CREATE INDEX webhooks_by_endpoint_status ON webhooks (endpoint_id, status, seq)")
    db.execute("DROP INDEX IF EXISTS webhooks_pending_by_endpoint")
    # Only rows waiting out a backoff (few): an endpoint's next retry time.
    db.execute("CREATE INDEX webhooks_backoff ON webhooks (endpoint_id, next_attempt_at) "
               "WHERE status = 'pending' AND next_attempt_at > 0")
    for trigger in ("insert", "update", "delete"):
        db.execute(f"DROP TRIGGER IF EXISTS webhooks_count_{trigger}")
    db.execute("DROP TABLE IF EXISTS webhook_counts")
    db.execute("CREATE TABLE webhook_counts (endpoint_id TEXT NOT NULL, status TEXT NOT NULL, "
               "n INTEGER NOT NULL, PRIMARY KEY (endpoint_id, status)) WITHOUT ROWID")
    db.execute("INSERT INTO webhook_counts SELECT endpoint_id, status, COUNT(*) FROM webhooks "
               "GROUP BY endpoint_id, status")  # (the new index: no sort)
    for trigger in COUNT_TRIGGERS:
        db.execute(trigger)
    # What the ack writer saw last per endpoint (store.stats); from older rows: the last
    # delivery, and the newest error of a webhook not delivered since.
    db.execute("CREATE TABLE endpoint_stats (endpoint_id TEXT PRIMARY KEY, "
               "last_delivered_at REAL, last_error_webhook_id TEXT, last_error_at REAL, "
               "last_error_status_code INTEGER, last_error_message TEXT) WITHOUT ROWID")
    db.execute("INSERT INTO endpoint_stats (endpoint_id, last_delivered_at) "
               "SELECT endpoint_id, MAX(delivered_at) FROM webhooks WHERE status = 'delivered' "
               "GROUP BY endpoint_id")
    db.execute(
        "INSERT INTO endpoint_stats (endpoint_id, last_error_webhook_id, last_error_at, "
        "last_error_status_code, last_error_message) "
        "SELECT endpoint_id, id, MAX(updated_at), last_status_code, last_error FROM webhooks "
        "WHERE status != 'delivered' AND last_error IS NOT NULL GROUP BY endpoint_id "
        "ON CONFLICT (endpoint_id) DO UPDATE SET "
        "last_error_webhook_id = excluded.last_error_webhook_id, "
        "last_error_at = excluded.last_error_at, "
        "last_error_status_code = excluded.last_error_status_code, "
        "last_error_message = excluded.last_error_message")
