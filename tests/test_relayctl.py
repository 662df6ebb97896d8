"""relayctl against a running relayd: status per endpoint, list, show, retry, replay."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import trio

from relayd.edge import ctl
from relayd.edge.daemon import Relayd
from tests.conftest import start_edge
from tests.helpers import TestHub, post, wait_for

# the installed console script, as a user runs it
RELAYCTL = str(Path(sys.executable).with_name("relayctl"))


async def ingest(edge: Relayd, endpoint_id: str, body: bytes = b"{}") -> str:
    webhook_id: str = (await post(edge.addresses.ingress, endpoint_id, body)).json()["id"]
    return webhook_id


async def relayctl(edge: Relayd, *args: str) -> tuple[int, str, str]:
    """The console script, in a subprocess: exit code, stdout, stderr."""
    result = await trio.run_process([RELAYCTL, *args, "--admin", f"http://{edge.addresses.admin}"],
                                    capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def run_main(capsys: pytest.CaptureFixture[str], edge: Relayd | None, *args: str
                   ) -> tuple[int, str, str]:
    """`ctl.main` on a worker thread (it blocks; the edge runs on this event loop)."""
    admin = f"http://{edge.addresses.admin}" if edge is not None else "http://127.0.0.1:9"
    code = await trio.to_thread.run_sync(ctl.main, [*args, "--admin", admin])
    out, err = capsys.readouterr()
    return code, out, err


async def test_relayctl_lists_shows_retries_and_replays_as_a_person_would(edge: Relayd) -> None:
    gone = await ingest(edge, "alpha", b'{"n": 1}')
    done = await ingest(edge, "alpha", b'{"n": 2}')
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == gone
        await hub.ack(gone, success=False, status_code=410, error="HTTP 410 Gone",
                      permanent=True)
        assert (await hub.recv_webhook()).id == done
        await hub.ack(done)
        await wait_for(lambda: edge.ack_writer.applied == 2)

        code, out, _ = await relayctl(edge, "list")
        assert code == 0
        header, *rows = out.splitlines()
        assert header.split() == ["ID", "ENDPOINT", "STATUS", "TRIES", "AGE", "CODE"]
        assert [row.split()[:4] for row in rows] == [[done, "alpha", "delivered", "1"],
                                                     [gone, "alpha", "failed", "1"]]
        assert rows[1].split()[-1] == "410"

        code, out, _ = await relayctl(edge, "show", gone, "--body")
        assert code == 0
        assert "status:       failed, 1 attempt\n" in out
        assert "request:      POST /h/alpha from 127.0.0.1\n" in out
        assert ": HTTP 410 Gone\n" in out and out.endswith('body:\n{"n": 1}\n')

        code, out, err = await relayctl(edge, "retry", gone)
        assert (code, out) == (0, f"retried {gone} (was failed)\n")
        assert (await hub.recv_webhook()).id == gone
        await hub.ack(gone)

        code, out, err = await relayctl(edge, "retry", done)
        assert code == ctl.EXIT_CONFLICT == 4 and out == ""
        assert f"relayctl replay {done}" in err

        code, out, _ = await relayctl(edge, "replay", done)
        assert code == 0 and out.startswith(f"replayed {done} as ")
        copy = out.split()[-1]
        assert (await hub.recv_webhook()).id == copy

        code, out, err = await relayctl(edge, "show", "nope")
        assert (code, out, err) == (ctl.EXIT_NOT_FOUND, "", "relayctl: no webhook nope\n")


async def test_relayctl_status_says_why_an_endpoint_waits(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    edge = await start_edge(nursery, tmp_path, retry_initial=600, retry_max=600)
    stuck = await ingest(edge, "alpha")
    await ingest(edge, "alpha")
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        assert (await hub.recv_webhook()).id == stuck
        await hub.ack(stuck, success=False, status_code=503,
                      error="HTTP 503 Service Unavailable")
        await wait_for(lambda: edge.ack_writer.applied == 1)
        await ingest(edge, "beta")
        code, out, _ = await run_main(capsys, edge, "status")
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    endpoints = " ".join(lines[lines.index("endpoints:") + 1:])
    assert re.search(r"alpha: 2 pending \(oldest \d+ s\), next retry in (9|10) min, "
                     r"last error 503 from http://127.0.0.1:9/alpha \d+ s ago",
                     " ".join(endpoints.split()))
    assert re.search(r"beta: 1 pending \(oldest \d+ s\), the connected hub does not serve it",
                     endpoints)
    assert "gamma: nothing pending" in endpoints


async def test_relayctl_list_pages_fit_80_columns(
    edge: Relayd, capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [await ingest(edge, ("alpha", "beta")[i % 2]) for i in range(55)]
    code, out, err = await run_main(capsys, edge, "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1 + ctl.LIST_LIMIT and all(len(line) <= 80 for line in lines)
    assert [line.split()[0] for line in lines[1:]] == ids[::-1][:50]
    before = err.split("--before ")[1].rstrip(")\n")
    code, out, _ = await run_main(capsys, edge, "list", "--before", before)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ids[4::-1]
    code, out, _ = await run_main(capsys, edge, "list", "--endpoint", "beta", "--limit", "2",
                                  "--json")
    assert [w["id"] for w in json.loads(out)["webhooks"]] == [ids[53], ids[51]]


async def test_relayctl_exit_codes_scripts_can_use(
    edge: Relayd, capsys: pytest.CaptureFixture[str],
) -> None:
    webhook_id = await ingest(edge, "alpha")
    # no such webhook: 3; several ids: each is tried, the first failure's code
    code, out, err = await run_main(capsys, edge, "retry", "nope", webhook_id, "--json")
    assert code == ctl.EXIT_NOT_FOUND == 3
    answers = json.loads(out)
    assert answers[0] == {"id": "nope", "error": "no webhook nope"}
    assert answers[1]["queued"]["id"] == webhook_id
    assert (await run_main(capsys, edge, "replay", "nope"))[0] == 3
    assert (await run_main(capsys, edge, "retry", "--endpoint", "nope"))[0] == 3
    # a webhook in flight: 4
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await hub.recv_webhook()).id == webhook_id
        code, _, err = await run_main(capsys, edge, "retry", webhook_id)
        assert code == ctl.EXIT_CONFLICT and "in flight" in err
        await hub.ack(webhook_id, success=False, status_code=410, error="gone",
                      permanent=True)
        await wait_for(lambda: edge.ack_writer.applied == 1)
        code, out, _ = await run_main(capsys, edge, "retry", "--endpoint", "alpha",
                                      "--status", "failed", "--json")
        assert code == 0 and json.loads(out)["ids"] == [webhook_id]
        assert (await hub.recv_webhook()).id == webhook_id
    # bad usage: 2
    for args in (["retry"], ["retry", webhook_id, "--endpoint", "alpha"],
                 ["retry", webhook_id, "--status", "failed"]):
        code, _, err = await run_main(capsys, edge, *args)
        assert code == ctl.EXIT_USAGE == 2 and err.startswith("relayctl: retry: ")
    with pytest.raises(SystemExit) as exited:
        await run_main(capsys, edge, "list", "--limit", "501")
    assert exited.value.code == 2
    # relayd not there: 1
    code, out, err = await run_main(capsys, None, "list")
    assert (code, out) == (ctl.EXIT_ERROR, "") and "not reachable" in err
