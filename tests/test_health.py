"""GET /healthz and /readyz: probes for load balancers and container runtimes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import trio

from relayd.edge.admin.health import STORE_CHECK_SECONDS
from relayd.edge.daemon import Relayd
from tests.conftest import start_edge
from tests.helpers import TestHub, post

# Scheduling on a loaded machine, on top of the probe's own bound.
SLACK = 1.0


async def probe(edge: Relayd, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://{edge.addresses.admin}{path}")


async def test_healthz_answers_ok_while_the_process_runs(edge: Relayd) -> None:
    response = await probe(edge, "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_is_ready_with_listeners_bound_and_a_writable_store(edge: Relayd) -> None:
    response = await probe(edge, "/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


async def test_readyz_is_503_while_another_program_holds_the_database_lock(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, store={"busy_timeout": 0.1})
    locker = sqlite3.connect(edge.config.store.path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        asked = trio.current_time()
        response = await probe(edge, "/readyz")
        took = trio.current_time() - asked
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert "database is locked" in response.json()["reason"]
        assert took < 2 * STORE_CHECK_SECONDS + SLACK  # the probe does not hang on the lock
        # (and relayd itself refuses webhooks meanwhile: traffic is better sent elsewhere)
        assert (await post(edge.addresses.ingress, "alpha")).status_code == 503
        locker.execute("ROLLBACK")
        assert (await probe(edge, "/readyz")).status_code == 200
    finally:
        locker.close()


async def test_readyz_is_503_once_a_stop_has_begun(nursery: trio.Nursery, tmp_path: Path) -> None:
    # A webhook in flight keeps the stop waiting for its ack, with the admin listener up.
    edge = await start_edge(nursery, tmp_path, shutdown_grace=10)
    await post(edge.addresses.ingress, "alpha")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
        edge.request_shutdown()
        response = await probe(edge, "/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "reason": "shutting down"}
        assert (await probe(edge, "/healthz")).status_code == 200  # alive, just leaving
        await hub.ack(webhook.id)
        await hub.wait_end()
