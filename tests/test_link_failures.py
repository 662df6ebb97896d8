"""Links that fail badly, and long-run resource use of the gRPC side."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import trio

from relayd.hub.daemon import RelayHub
from tests.conftest import start_edge
from tests.db import open_db
from tests.destination import Destination
from tests.helpers import ENDPOINTS, TestHub, make_hub_config, post, socket_inodes, wait_for
from tests.proxy import BlackHoleProxy
from tests.system import System


async def test_black_hole_link_is_detected_and_the_hub_reconnects(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=0.2, stale_timeout=1)
    destination = Destination()
    await nursery.start(destination.serve)
    proxy = BlackHoleProxy(edge.addresses.grpc)
    await nursery.start(proxy.run)
    hub = RelayHub(make_hub_config(proxy.address, {ep: destination.url(f"/{ep}")
                                                   for ep in ENDPOINTS},
                                   heartbeat_interval=0.2, stale_timeout=1))
    await nursery.start(hub.run)
    await post(edge.addresses.ingress, "alpha", b"before")
    await destination.wait_count(lambda d: d.bodies("/alpha") == [b"before"])
    server_sockets = {c for c in edge.grpc_server.connections}
    assert len(server_sockets) == 1
    proxy.black_hole()
    started = trio.current_time()
    await post(edge.addresses.ingress, "alpha", b"into the hole")  # in flight, lost
    await wait_for(lambda: not edge.manager.is_connected()
                   or edge.manager.current.connected_since > time.time() - 0.5, within=5)
    # the edge gave up on the silent connection within stale_timeout + 1 s and closed it
    await wait_for(lambda: not (server_sockets & edge.grpc_server.connections), within=3)
    assert trio.current_time() - started <= 1 + 1
    # the hub found the link dead too, reconnected through the proxy, and the webhook
    # that was in flight is delivered
    await destination.wait_count(lambda d: b"into the hole" in d.bodies("/alpha"), within=10)
    assert hub.connections >= 2


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries
                       for child in nursery.child_tasks)
    return count(trio.lowlevel.current_root_task())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_500_connect_drop_cycles_leave_fds_tasks_and_memory_flat(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path)
    timestamps = iter(range(int(time.time()) - 290, int(time.time()) + 290))

    async def cycle() -> None:
        async with TestHub.connected(edge.addresses.grpc, timestamp=next(timestamps)):
            pass  # leaving drops the TCP connection, like a hub that crashed
        await wait_for(lambda: not edge.grpc_server.connections)

    for _ in range(50):  # warm up caches, thread pool, allocator
        await cycle()
    fds, tasks, rss = _fd_count(), _task_count(), _rss_mb()
    for _ in range(500):
        await cycle()
    await wait_for(lambda: not edge.manager.is_connected())
    print(f"fds {fds}->{_fd_count()} tasks {tasks}->{_task_count()} "
          f"rss {rss:.1f}->{_rss_mb():.1f} MB")
    assert _fd_count() <= fds
    assert _task_count() <= tasks
    assert _rss_mb() - rss < 10
    assert len(socket_inodes()) < 50


async def test_sigterm_under_load_exits_fast_and_keeps_everything_accepted(
    system: System,
) -> None:
    await system.start_edge()
    await system.start_hub()
    accepted: list[str] = []
    stopped = trio.Event()

    async def poster(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stopped.is_set():
            i += 1
            try:
                response = await client.post(f"http://{system.ingress}/h/github",
                                             content=f"{n}-{i}".encode())
            except httpx.HTTPError:
                continue
            if response.status_code == 202:
                accepted.append(response.json()["id"])

    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0),
                                 timeout=10) as client, trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(poster, client, n)
        await trio.sleep(1.0)  # load for a second, then stop relayd in the middle of it
        system.edge.send_signal(signal.SIGTERM)
        started = trio.current_time()
        assert await system.edge.wait(within=10) == 0
        took = trio.current_time() - started
        stopped.set()
    print(f"accepted {len(accepted)} webhooks; relayd stopped {took:.2f}s after SIGTERM")
    assert took < 5
    assert len(accepted) > 50
    with open_db(system.tmp / "relayd.db") as db:
        stored = {row[0] for row in db.execute("SELECT id FROM webhooks")}
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert set(accepted) <= stored
    # after a restart everything accepted is delivered
    await system.start_edge()
    await system.wait_queue(within=30, pending=0, in_flight=0,
                            at_least={"delivered": len(accepted)})
    got = {r.headers["x-relay-webhook-id"] for r in system.destination.received}
    assert set(accepted) <= got
