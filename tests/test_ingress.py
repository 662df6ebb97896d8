"""Acceptance criterion 7: the HTTP ingress."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio

from relayd.edge.daemon import Relayd
from tests.db import open_db
from tests.helpers import TestHub, post


async def test_post_is_stored_byte_exact_and_answered_202(edge: Relayd) -> None:
    body = bytes(range(256)) + os.urandom(4096) + b"\r\n\x00"
    response = await post(edge.addresses.ingress, "alpha", body,
                          {"content-type": "application/octet-stream",
                           "x-hub-signature-256": "sha256=abc"})
    assert response.status_code == 202
    wid = response.json()["id"]
    row = await edge.store.get(wid)
    assert row is not None and row["body"] == body and row["method"] == "POST"
    assert row["status"] == "pending" and row["endpoint_id"] == "alpha"
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
    assert webhook.payload == body
    assert webhook.headers["x-hub-signature-256"] == "sha256=abc"
    assert webhook.headers["content-type"] == "application/octet-stream"
    assert webhook.destination_url == "http://127.0.0.1:9/alpha"
    assert abs(webhook.received_at.ToNanoseconds() / 1e9 - float(row["received_at"])) < 1e-3


async def test_put_is_accepted_and_repeated_headers_are_joined(edge: Relayd) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.put(f"http://{edge.addresses.ingress}/h/beta", content=b"x",
                                    headers=[("x-tag", "one"), ("x-tag", "two")])
    assert response.status_code == 202
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
    assert webhook.headers["x-tag"] == "one, two"


async def test_unknown_endpoint_is_404_and_nothing_stored(edge: Relayd) -> None:
    response = await post(edge.addresses.ingress, "nope")
    assert response.status_code == 404 and response.json() == {"error": "unknown endpoint"}
    async with httpx.AsyncClient() as client:
        other = await client.post(f"http://{edge.addresses.ingress}/elsewhere", content=b"x")
        nested = await client.post(f"http://{edge.addresses.ingress}/h/nope/x", content=b"x")
        no_id = await client.post(f"http://{edge.addresses.ingress}/h//x", content=b"x")
    assert other.status_code == nested.status_code == no_id.status_code == 404
    assert (await edge.store.counts())["pending"] == 0


async def test_patch_and_delete_are_taken_and_other_methods_are_405(edge: Relayd) -> None:
    async with httpx.AsyncClient() as client:
        for method in ("PATCH", "DELETE"):
            response = await client.request(method, f"http://{edge.addresses.ingress}/h/alpha",
                                             content=b"x")
            assert response.status_code == 202
            row = await edge.store.get(response.json()["id"])
            assert row is not None and row["method"] == method
        for method in ("GET", "HEAD", "OPTIONS"):
            response = await client.request(method, f"http://{edge.addresses.ingress}/h/alpha")
            assert response.status_code == 405
            assert response.headers["allow"] == "POST, PUT, PATCH, DELETE"


async def test_body_over_limit_is_413(edge: Relayd) -> None:
    limit = edge.config.ingress.max_body_bytes
    assert (await post(edge.addresses.ingress, "alpha", b"x" * limit)).status_code == 202
    response = await post(edge.addresses.ingress, "alpha", b"x" * (limit + 1))
    assert response.status_code == 413

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(limit // 1024 + 2):
            yield b"y" * 1024

    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://{edge.addresses.ingress}/h/alpha",
                                     content=chunked())
    assert response.status_code == 413
    assert (await edge.store.counts())["pending"] == 1


@contextmanager
def writes_refused(edge: Relayd, mode: str = "ABORT") -> Iterator[None]:
    """Make every insert into the database fail, from another connection, while inside.

    A trigger lives in the schema, so it reaches the daemon's own write connection.
    ``ABORT`` fails the statement inside the daemon's open transaction (like a read-only
    database); ``ROLLBACK`` also destroys that transaction, as SQLite does on a full disk.
    """
    with open_db(edge.config.store.path) as other:
        other.execute(f"CREATE TRIGGER refuse_writes BEFORE INSERT ON webhooks "
                      f"BEGIN SELECT RAISE({mode}, 'storage refuses writes'); END")
        try:
            yield
        finally:
            other.execute("DROP TRIGGER refuse_writes")


async def test_storage_unavailable_is_503_never_202_and_recovers(edge: Relayd) -> None:
    with writes_refused(edge):
        response = await post(edge.addresses.ingress, "alpha", b"lost?")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert (await edge.store.counts())["pending"] == 0
    assert (await post(edge.addresses.ingress, "alpha", b"back")).status_code == 202
    assert (await edge.store.counts())["pending"] == 1


async def test_concurrent_posts_share_commits(edge: Relayd) -> None:
    before = edge.batcher.batches
    async with httpx.AsyncClient(base_url=f"http://{edge.addresses.ingress}",
                                 limits=httpx.Limits(max_connections=64)) as client:
        responses: list[httpx.Response] = []

        async def one(i: int) -> None:
            responses.append(await client.post("/h/alpha", content=f"{i}".encode()))

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, i)
    assert [r.status_code for r in responses] == [202] * 64
    assert (await edge.store.counts())["pending"] == 64
    # group commit: fewer transactions than requests
    assert edge.batcher.batches - before < 64


async def test_database_locked_by_another_process_is_503_and_recovers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    import sqlite3

    from tests.conftest import start_edge

    edge = await start_edge(nursery, tmp_path, store={"busy_timeout": 0.2})
    other = sqlite3.connect(edge.config.store.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    try:
        response = await post(edge.addresses.ingress, "alpha", b"locked out")
        assert response.status_code == 503
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await post(edge.addresses.ingress, "alpha", b"back")).status_code == 202
    assert (await edge.store.counts())["pending"] == 1


async def test_write_error_that_rolls_back_is_503_daemon_stays_up_and_recovers(
    edge: Relayd, caplog: pytest.LogCaptureFixture,
) -> None:
    assert (await post(edge.addresses.ingress, "alpha", b"first")).status_code == 202
    big = b"z" * 60_000
    # as on a full disk: SQLite rolls the whole transaction back under the daemon
    with writes_refused(edge, "ROLLBACK"):
        responses = [await post(edge.addresses.ingress, "alpha", big) for _ in range(3)]
        assert [r.status_code for r in responses] == [503, 503, 503]
        assert "IntegrityError: storage refuses writes" in caplog.text
        async with httpx.AsyncClient() as client:  # still serving
            status = await client.get(f"http://{edge.addresses.admin}/api/status")
        assert status.status_code == 200 and status.json()["queue"]["pending"] == 1
    assert (await post(edge.addresses.ingress, "alpha", big)).status_code == 202
    assert (await edge.store.counts())["pending"] == 2
