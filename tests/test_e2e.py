"""The whole system: relayd and relay-hub as real processes, a real HTTP destination."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.destination import Destination
from tests.processes import BIN, Daemon, free_port

ENDPOINTS = ("github", "stripe", "camera")
SECRET = "e2e-shared-secret-4f1c"


class System:
    """relayd + relay-hub + destination, with helpers to drive and inspect them."""

    def __init__(self, tmp_path: Path, destination: Destination) -> None:
        self.tmp = tmp_path
        self.destination = destination
        self.grpc_port = free_port()
        (tmp_path / "hub.secret").write_text(SECRET + "\n")
        (tmp_path / "hub.secret").chmod(0o600)
        self.edge_config = tmp_path / "relayd.toml"
        endpoints = "".join(
            f'[[endpoints]]\nid = "{ep}"\ndestination_url = "{destination.url("/" + ep)}"\n'
            for ep in ENDPOINTS)
        self.edge_config.write_text(f"""
[relay]
grpc_listen = "127.0.0.1:{self.grpc_port}"
heartbeat_interval = 1
stale_timeout = 3
retry_initial = 0.2
retry_max = 1
poll_interval = 0.2
shutdown_grace = 1
[ingress]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:{free_port()}"
[store]
path = "relayd.db"
[hub]
id = "home"
secret_file = "hub.secret"
{endpoints}""")
        self.edge = Daemon([str(BIN / "relayd"), "--config", str(self.edge_config)],
                           tmp_path / "relayd.log")
        self.hub = self.make_hub("relay-hub", "hub.secret")
        self.ingress = self.admin = ""

    def make_hub(self, name: str, secret_file: str) -> Daemon:
        config = self.tmp / f"{name}.toml"
        config.write_text(f"""
[hub]
id = "home"
edge_url = "http://127.0.0.1:{self.grpc_port}"
secret_file = "{secret_file}"
heartbeat_interval = 1
stale_timeout = 3
reconnect_initial = 0.2
reconnect_max = 1
""")
        return Daemon([str(BIN / "relay-hub"), "--config", str(config)],
                      self.tmp / f"{name}.log")

    async def start_edge(self) -> None:
        await self.edge.start()
        match = await self.edge.wait_log(r"relayd ready grpc=\S+ ingress=(\S+) admin=(\S+)")
        self.ingress, self.admin = match.group(1), match.group(2)

    async def start_hub(self) -> None:
        await self.hub.start()
        await self.hub.wait_log("connected to the edge")

    async def post(self, client: httpx.AsyncClient, endpoint: str, body: bytes,
                   headers: dict[str, str] | None = None) -> str:
        response = await client.post(f"http://{self.ingress}/h/{endpoint}", content=body,
                                     headers=headers or {})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def status(self) -> dict:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://{self.admin}/api/status")).json()

    def db_statuses(self) -> dict[str, str]:
        with sqlite3.connect(self.tmp / "relayd.db") as db:
            return dict(db.execute("SELECT id, status FROM webhooks").fetchall())

    async def wait_queue(self, within: float = 30.0, **expected: int) -> dict:
        with trio.fail_after(within):
            while True:
                doc = await self.status()
                if all(doc["queue"][k] == v for k, v in expected.items()):
                    return doc
                await trio.sleep(0.05)


@pytest.fixture
async def system(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[System]:
    destination = Destination()
    await nursery.start(destination.serve)
    sys_ = System(tmp_path, destination)
    try:
        yield sys_
    finally:
        await sys_.hub.stop()
        await sys_.edge.stop()


async def test_300_webhooks_arrive_byte_exact_in_order_per_endpoint(system: System) -> None:
    await system.start_edge()
    await system.start_hub()
    sent: dict[str, list[tuple[str, bytes]]] = {ep: [] for ep in ENDPOINTS}
    async with httpx.AsyncClient() as client:
        for i in range(300):
            endpoint = ENDPOINTS[i % 3]
            if i % 2:
                body, ctype = os.urandom(64 + i) + b"\x00\xff", "application/octet-stream"
            else:
                body, ctype = json.dumps({"n": i, "text": "h\u00e9llo"}).encode(), \
                    "application/json"
            wid = await system.post(client, endpoint, body,
                                    {"content-type": ctype, "x-signature": f"sig-{i}"})
            sent[endpoint].append((wid, body))
    doc = await system.wait_queue(delivered=300, pending=0, in_flight=0)
    assert doc["connected"] is True
    for endpoint in ENDPOINTS:
        received = [r for r in system.destination.received if r.path == f"/{endpoint}"]
        assert [r.body for r in received] == [body for _, body in sent[endpoint]]
        assert [r.headers["x-relay-webhook-id"] for r in received] == \
            [wid for wid, _ in sent[endpoint]]
        assert all(r.headers["x-signature"].startswith("sig-") for r in received)
    assert set(system.db_statuses().values()) == {"delivered"}
    ctl = await trio.run_process([str(BIN / "relayctl"), "status", "--config",
                                  str(system.edge_config)], capture_stdout=True)
    text = ctl.stdout.decode()
    assert "hub:         connected (home" in text and "pending:     0" in text


async def test_transient_then_success_keeps_order_and_404_fails_and_moves_on(
    system: System,
) -> None:
    system.destination.statuses["/github"] = [503, 503, 200]
    system.destination.statuses["/stripe"] = [404]
    await system.start_edge()
    await system.start_hub()
    async with httpx.AsyncClient() as client:
        first = await system.post(client, "github", b"g1")
        second = await system.post(client, "github", b"g2")
        lost = await system.post(client, "stripe", b"s1")
        after = await system.post(client, "stripe", b"s2")
    await system.wait_queue(delivered=3, failed=1, pending=0, in_flight=0)
    github = [(r.body, r.headers["x-relay-attempt"], r.answered)
              for r in system.destination.received if r.path == "/github"]
    assert github == [(b"g1", "1", 503), (b"g1", "2", 503), (b"g1", "3", 200),
                      (b"g2", "1", 200)]
    statuses = system.db_statuses()
    assert statuses[first] == statuses[second] == statuses[after] == "delivered"
    assert statuses[lost] == "failed"


async def test_stopped_hub_backlog_is_delivered_in_order_after_restart(system: System) -> None:
    await system.start_edge()
    await system.start_hub()
    system.hub.send_signal(signal.SIGTERM)
    assert await system.hub.wait() == 0
    await system.wait_queue(pending=0)  # nothing yet
    ids = []
    async with httpx.AsyncClient() as client:
        for i in range(30):
            ids.append(await system.post(client, "camera", f"frame-{i}".encode()))
    doc = await system.wait_queue(pending=30)
    assert doc["connected"] is False and system.destination.received == []
    await system.start_hub()
    await system.wait_queue(delivered=30, pending=0, in_flight=0)
    assert system.destination.bodies("/camera") == [f"frame-{i}".encode() for i in range(30)]


async def test_relayd_killed_and_restarted_hub_reconnects_nothing_lost(system: System) -> None:
    await system.start_edge()
    await system.start_hub()
    ids = []
    async with httpx.AsyncClient() as client:
        for i in range(20):
            ids.append(await system.post(client, ENDPOINTS[i % 3], f"before-{i}".encode()))
        system.edge.send_signal(signal.SIGKILL)
        await system.edge.wait()
        await system.start_edge()
        for i in range(20):
            ids.append(await system.post(client, ENDPOINTS[i % 3], f"after-{i}".encode()))
    await system.wait_queue(delivered=40, pending=0, in_flight=0)
    assert await system.hub.wait_log("connected to the edge(.|\n)*connected to the edge")
    got = {r.headers["x-relay-webhook-id"] for r in system.destination.received}
    assert set(ids) <= got
    assert set(system.db_statuses()) == set(ids)


async def test_hub_with_wrong_secret_is_rejected_and_good_hub_keeps_working(
    system: System,
) -> None:
    await system.start_edge()
    await system.start_hub()
    (system.tmp / "bad.secret").write_text("not-the-secret\n")
    (system.tmp / "bad.secret").chmod(0o600)
    intruder = system.make_hub("intruder", "bad.secret")
    await intruder.start()
    try:
        await intruder.wait_log("rejected by the edge: invalid signature")
        async with httpx.AsyncClient() as client:
            wid = await system.post(client, "github", b"still flowing")
        await system.wait_queue(delivered=1)
        doc = await system.status()
        assert doc["connected"] is True
        assert system.destination.bodies("/github") == [b"still flowing"]
        assert system.db_statuses()[wid] == "delivered"
        assert "not-the-secret" not in intruder.log() + system.edge.log()
    finally:
        await intruder.stop()


async def test_relay_hub_check_reports_accepted_and_rejected(system: System) -> None:
    await system.start_edge()
    good = await trio.run_process([*system.hub.args, "--check"], capture_stdout=True,
                                  capture_stderr=True)
    assert good.stdout.decode().startswith("ok: authenticated to http://127.0.0.1:")
    (system.tmp / "bad.secret").write_text("nope\n")
    (system.tmp / "bad.secret").chmod(0o600)
    bad_hub = system.make_hub("bad", "bad.secret")
    bad = await trio.run_process([*bad_hub.args, "--check"], capture_stdout=True,
                                 capture_stderr=True, check=False)
    assert bad.returncode == 1
    assert "rejected by http://127.0.0.1" in bad.stdout.decode()
    assert "invalid signature" in bad.stdout.decode()


DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


async def test_demo_runs_end_to_end() -> None:
    demo = DEMO
    result = await trio.run_process([str(BIN / "python"), str(demo)], capture_stdout=True,
                                    capture_stderr=True, check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert out.count("destination <- POST /api/webhook/") == 3
    assert "delivered:   3" in out and "exit codes 0, 0" in out
