"""A full disk, for real: the store on a size-limited tmpfs (8 MiB), mounted for the test.

Needs root to mount (CI runs as root); skipped otherwise, saying why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from relayd.edge.capacity import free_bytes
from relayd.edge.daemon import Relayd
from tests.db import open_db
from tests.helpers import TestHub, make_config, post, wait_for

KIB = 1024
MIB = 1024 * KIB
BODY = 16 * KIB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs at ``tmp_path/small``, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs the tests as root)")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """A file on ``folder``'s file system taking all but ``leave`` bytes of its free space
    (someone else's data: logs, a backup)."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * (free_bytes(folder) - leave))
    return filler


def check_database(path: Path, accepted: dict[str, bytes]) -> None:
    """The database is sound and holds every webhook answered 202, byte for byte."""
    with open_db(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = dict(db.execute("SELECT id, body FROM webhooks").fetchall())
    assert stored == accepted


async def start(nursery: trio.Nursery, tmp_path: Path, folder: Path, **store: object) -> Relayd:
    edge = Relayd(make_config(tmp_path, store={"path": str(folder / "relayd.db"), **store}))
    await nursery.start(edge.run)
    return edge


async def test_under_min_free_bytes_webhooks_get_503_acks_go_on_and_202_once_space_is_back(
        nursery: trio.Nursery, tmp_path: Path, small_fs: Path) -> None:
    edge = await start(nursery, tmp_path, small_fs, min_free_bytes=2 * MIB)
    assert edge.addresses is not None and edge.capacity is not None
    address, capacity = edge.addresses.ingress, edge.capacity
    filler = fill(small_fs, leave=3 * MIB)  # 1 MiB above the floor
    accepted: dict[str, bytes] = {}

    with trio.fail_after(60):
        refused = None
        while refused is None:
            # four at a time, each time the sampler has looked again: seen at once
            seen = capacity.samples.value
            for _ in range(4):
                body = os.urandom(BODY)
                answer = await post(address, "alpha", body)
                if answer.status_code != 202:
                    refused = answer
                    break
                accepted[answer.json()["id"]] = body
            await capacity.samples.wait_value(lambda n, seen=seen: n > seen)
    # refused by the floor, with room left on the disk for what must go on
    assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
    assert refused.json() == {"error": "relay storage is full, retry later"}
    assert MIB < free_bytes(small_fs) < 2 * MIB
    assert capacity.statistics().full
    # the megabyte above the floor went to webhooks (each on the disk twice for a while:
    # in the WAL, then in the database too)
    assert len(accepted) >= 16
    assert (await post(address, "beta", b"x")).status_code == 503  # every endpoint
    # acks are written and status answers
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        for _ in accepted:
            await hub.ack((await hub.recv_webhook()).id)
        async with httpx.AsyncClient() as client:

            async def all_delivered() -> bool:
                status = await client.get(f"http://{edge.addresses.admin}/api/status")
                return bool(status.json()["queue"]["delivered"] == len(accepted))

            await wait_for(all_delivered)
    # someone frees space: webhooks are taken again from the next sample on
    filler.unlink()
    seen = capacity.samples.value
    await capacity.samples.wait_value(lambda n: n > seen)
    assert not capacity.statistics().full
    answer = await post(address, "alpha", b"after")
    assert answer.status_code == 202
    accepted[answer.json()["id"]] = b"after"
    check_database(small_fs / "relayd.db", accepted)


async def test_with_no_floor_a_full_disk_gives_503_never_a_lost_202_and_recovers(
        nursery: trio.Nursery, tmp_path: Path, small_fs: Path) -> None:
    edge = await start(nursery, tmp_path, small_fs, min_free_bytes=0)
    assert edge.addresses is not None
    address = edge.addresses.ingress
    filler = fill(small_fs, leave=1 * MIB)
    accepted: dict[str, bytes] = {}
    answers = []
    with trio.fail_after(60):
        while not answers or answers[-1] == 202:
            body = os.urandom(BODY)
            answer = await post(address, "alpha", body)
            answers.append(answer.status_code)
            if answer.status_code == 202:
                accepted[answer.json()["id"]] = body
    # SQLite's "database or disk is full": the commit failed, so 503, not 202
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json() == {"error": "storage unavailable, retry later"}
    assert free_bytes(small_fs) < BODY
    assert len(accepted) >= 16  # the megabyte left went to webhooks first (see above)
    # more of them while the disk is full: refused, and the daemon stays up
    assert {(await post(address, "alpha", os.urandom(BODY))).status_code
            for _ in range(5)} == {503}
    filler.unlink()
    answer = await post(address, "alpha", b"after")
    assert answer.status_code == 202
    accepted[answer.json()["id"]] = b"after"
    check_database(small_fs / "relayd.db", accepted)
