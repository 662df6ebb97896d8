"""The admin API on a big store: each request's time through a real relayd process.

``python -m bench.admin_api [--rows N] [--db PATH] [--repeat R]``: fills ``PATH`` (default:
a temporary folder) with ``N`` pending webhooks over three endpoints the way ingest stores
them (`fill_pending`), marks one in ten delivered and one in a hundred failed (the
statuses a filter looks for), starts relayd on it with no hub (nothing is dispatched) and
times each request ``R`` times: median and p95 in ms, and the size of the answer.

An existing ``PATH`` is used as it is; one written by an older relayd is migrated when
relayd opens it, and the time that took is printed first (``migration``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench.common import edge_ports, fill_pending, percentile, start_relayd, stop, write_edge_config
from relayd.edge.store import AckRecord, Store
from relayd.edge.store.schema import SCHEMA_VERSION

ENDPOINTS = ("alpha", "beta", "gamma")
# Acks applied per transaction while marking rows delivered or failed.
ACK_BATCH = 5000


async def mark_some_final(db: Path, count: int) -> None:
    """One in ten delivered (200), one in a hundred failed (410): fill_pending's ids."""
    async with Store.open(db) as store:
        acks = [AckRecord(f"b{i:08d}", i % 100 != 0, 200 if i % 100 else 410,
                          "" if i % 100 else "HTTP 410 Gone", i % 100 == 0)
                for i in range(0, count, 10)]
        for start in range(0, len(acks), ACK_BATCH):
            await store.apply_acks(acks[start:start + ACK_BATCH], time.time())


def schema_version(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


async def main(rows: int, db: Path | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="relayd-admin-bench-") as tmp:
        folder = Path(tmp)
        path = db or folder / "relayd.db"
        if not path.exists():
            started = time.monotonic()
            await fill_pending(path, ENDPOINTS, rows)
            await mark_some_final(path, rows)
            print(f"filled {rows} rows in {time.monotonic() - started:.0f} s")
        elif (old := schema_version(path)) < SCHEMA_VERSION:
            started = time.monotonic()
            async with Store.open(path):
                pass
            print(f"migration {old} -> {SCHEMA_VERSION}: {time.monotonic() - started:.1f} s")
        config = write_edge_config(folder, ENDPOINTS)
        config.write_text(config.read_text().replace('path = "relayd.db"',
                                                     f'path = "{path.resolve()}"'))
        relayd = await start_relayd(config, folder / "relayd.log")
        try:
            admin = f"http://127.0.0.1:{edge_ports(config)['admin']}"
            await trio.to_thread.run_sync(measure, admin, repeat)
        finally:
            await stop(relayd)


def measure(admin: str, repeat: int) -> None:
    with httpx.Client(base_url=admin, timeout=60) as client:
        newest = client.get("/api/webhooks?limit=1").json()
        some_id = newest["webhooks"][0]["id"]
        middle = (newest["next"] or 2) // 2
        paths = [
            "/api/status",
            "/api/webhooks",
            "/api/webhooks?limit=500",
            f"/api/webhooks?before={middle}",
            "/api/webhooks?before=100",
            "/api/webhooks?status=pending",
            "/api/webhooks?status=delivered",
            "/api/webhooks?status=failed",
            f"/api/webhooks?status=failed&before={middle}",
            "/api/webhooks?status=dead_letter",
            "/api/webhooks?endpoint=beta",
            f"/api/webhooks?endpoint=beta&before={middle}",
            "/api/webhooks?endpoint=beta&status=failed",
            "/api/webhooks?endpoint=beta&status=pending&limit=500",
            f"/api/webhooks/{some_id}",
            "/metrics",
            "/readyz",
        ]
        for path in paths:  # warm up: relayd's start-up work, the page cache
            client.get(path).raise_for_status()
        print(f"{'request':<52} {'median ms':>9} {'p95 ms':>7} {'bytes':>7}")
        for path in paths:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            print(f"{path:<52} {statistics.median(times):9.1f} {percentile(times, 0.95):7.1f} "
                  f"{len(response.content):7d}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="use (or fill) this database")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    trio.run(main, args.rows, args.db, args.repeat)
