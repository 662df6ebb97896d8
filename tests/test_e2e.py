"""The whole system: relayd and relay-hub as real processes, a real HTTP destination."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import running_system
from tests.destination import RawDestination
from tests.processes import BIN
from tests.system import ENDPOINTS, System


@pytest.fixture
async def raw_system(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[System]:
    """The system with a destination that records each request line byte for byte."""
    async with running_system(nursery, tmp_path, RawDestination()) as sys_:
        yield sys_


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


async def test_put_with_sub_path_and_query_arrives_as_sent(raw_system: System) -> None:
    await raw_system.start_edge()
    await raw_system.start_hub()
    body = os.urandom(512) + b"\r\n\x00\xff"
    sent = [  # (method, request target at the edge, request target at the destination)
        ("PUT", b"/h/github/a/b?x=1%202&y", b"/github/a/b?x=1%202&y"),
        ("POST", b"/h/stripe/p%2Fq+r%7e/?a=+%2B&&b=", b"/stripe/p%2Fq+r%7e/?a=+%2B&&b="),
        ("DELETE", b"/h/camera", b"/camera"),
    ]
    async with httpx.AsyncClient() as client:
        for method, target, _ in sent:
            response = await client.request(
                method, f"http://{raw_system.ingress}/", content=body,
                headers={"content-type": "application/octet-stream"},
                extensions={"target": target})  # as given: httpx would normalise it
            assert response.status_code == 202, response.text
    await raw_system.wait_queue(delivered=3, pending=0, in_flight=0)
    destination = raw_system.destination
    assert isinstance(destination, RawDestination)
    got = sorted((r.method, r.target, r.body) for r in destination.received)
    assert got == sorted((m.encode(), target, body) for m, _, target in sent)
    # the sender's address is not added by default (Home Assistant would answer 400)
    assert all(b"x-forwarded-for" not in dict(r.headers) for r in destination.received)


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


def test_demo_runs_end_to_end_prints_its_commands_and_keeps_its_folder() -> None:
    result = subprocess.run([str(BIN / "python"), str(DEMO), "--keep"], capture_output=True,
                            text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    kept = Path(re.search(r"^demo: kept (\S+) ", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    try:
        assert out.count("sink | POST /api/webhook/") == 3
        assert "delivered:   3" in out
        assert "exit codes: relay-hub 0, relayd 0, sink 0" in out
        # the commands it ran, with the files it kept
        assert f"relayd --config {kept}/relayd.toml 2> {kept}/relayd.log &" in out
        assert f"relay-hub --config {kept}/relay-hub.toml 2> {kept}/relay-hub.log &" in out
        assert re.search(r"^\$ \S*python\S* -m relayd\.sink \d+ &", out, re.MULTILINE)
        assert re.search(r"^\$ \S*relayctl status --admin http://127\.0\.0\.1:\d+$", out,
                         re.MULTILINE)
        assert {"relayd.toml", "relay-hub.toml", "relayd.db", "relayd.log"} <= {
            p.name for p in kept.iterdir()}
        # at INFO a delivery has no line of its own: the per-endpoint summary counts it
        summaries = re.findall(r"summary of the last \S+ endpoint=\S+ received=\d+ "
                               r"delivered=(\d+)", (kept / "relayd.log").read_text())
        assert sum(int(n) for n in summaries) == 3
    finally:
        shutil.rmtree(kept)
