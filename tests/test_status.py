"""Acceptance criterion 8: /api/status and relayctl status."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import httpx
import trio

from relayd.edge.daemon import Relayd
from tests.helpers import ENDPOINTS, TestHub, post, wait_for

# the installed console script, as a user runs it
RELAYCTL = [str(Path(sys.executable).with_name("relayctl"))]


async def get_status(edge: Relayd) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{edge.addresses.admin}/api/status")
    assert response.status_code == 200
    return response.json()


async def test_status_json_shows_connection_and_queue(edge: Relayd) -> None:
    doc = await get_status(edge)
    assert doc == {
        "connected": False, "hub_id": None, "peer": None, "connected_since": None,
        "last_seen_at": None,
        "queue": {"pending": 0, "in_flight": 0, "delivered": 0, "failed": 0, "dead_letter": 0,
                  "oldest_pending_age_seconds": None},
        "endpoints": [
            {"id": ep, "destination_url": f"http://127.0.0.1:9/{ep}", "hub_serves": False,
             "pending": 0, "in_flight": 0, "delivered": 0, "failed": 0, "dead_letter": 0,
             "oldest_pending_age_seconds": None, "last_delivered_at": None,
             "last_error": None, "next_attempt_at": None}
            for ep in ENDPOINTS
        ],
    }
    ids = [(await post(edge.addresses.ingress, ep)).json()["id"]
           for ep in ("alpha", "alpha", "beta")]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        first = await hub.recv_webhook()
        second = await hub.recv_webhook()
        await hub.ack(first.id)
        await hub.ack(second.id, success=False, status_code=410, error="gone", permanent=True)
        await wait_for(lambda: edge.ack_writer.applied == 2)
        third = await hub.recv_webhook()
        assert third.id == ids[1]
        doc = await get_status(edge)
        assert doc["connected"] is True and doc["hub_id"] == "home"
        assert doc["peer"].startswith("127.0.0.1:")
        assert datetime.fromisoformat(doc["connected_since"]).tzinfo is not None
        assert datetime.fromisoformat(doc["last_seen_at"]) >= \
            datetime.fromisoformat(doc["connected_since"])
        assert doc["queue"] == {
            "pending": 0, "in_flight": 1, "delivered": 1, "failed": 1, "dead_letter": 0,
            "oldest_pending_age_seconds": doc["queue"]["oldest_pending_age_seconds"],
        }
        assert doc["queue"]["oldest_pending_age_seconds"] >= 0


async def test_admin_unknown_path_and_method(edge: Relayd) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://{edge.addresses.admin}/nope")).status_code == 404
        assert (await client.post(f"http://{edge.addresses.admin}/api/status")).status_code == 405


async def test_relayctl_status_against_running_daemon(edge: Relayd, tmp_path: Path) -> None:
    await post(edge.addresses.ingress, "alpha")
    admin = f"http://{edge.addresses.admin}"
    human = await trio.run_process([*RELAYCTL, "status", "--admin", admin], capture_stdout=True)
    text = human.stdout.decode()
    assert "hub:         disconnected" in text and "pending:     1" in text
    raw = await trio.run_process([*RELAYCTL, "status", "--admin", admin, "--json"],
                                 capture_stdout=True)
    assert json.loads(raw.stdout)["queue"]["pending"] == 1
    # --config finds the admin address in the daemon's own config file
    config = tmp_path / "ctl.toml"
    config.write_text(f'[admin]\nlisten = "{edge.addresses.admin}"\n')
    via_config = await trio.run_process([*RELAYCTL, "status", "--config", str(config)],
                                        capture_stdout=True)
    assert "pending:     1" in via_config.stdout.decode()


async def test_relayctl_with_a_config_whose_admin_port_is_zero_says_what_to_do(
    tmp_path: Path,
) -> None:
    config = tmp_path / "relayd.toml"
    config.write_text('[admin]\nlisten = "127.0.0.1:0"\n')
    result = await trio.run_process([*RELAYCTL, "status", "--config", str(config)],
                                    capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"has port 0" in result.stderr and b"use --admin URL" in result.stderr


async def test_relayctl_status_against_stopped_daemon_fails_plainly() -> None:
    result = await trio.run_process(
        [*RELAYCTL, "status", "--admin", "http://127.0.0.1:9"],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"relayd is not reachable at http://127.0.0.1:9" in result.stderr


async def test_secret_is_in_no_status_output_or_client_error(edge: Relayd) -> None:
    from tests.helpers import SECRET, TestHub

    async with TestHub.open(edge.addresses.grpc) as bad:
        response = await bad.connect(secret=b"wrong")
    async with TestHub.connected(edge.addresses.grpc):
        doc = await get_status(edge)
        human = await trio.run_process([*RELAYCTL, "status", "--admin",
                                        f"http://{edge.addresses.admin}"], capture_stdout=True)
    for text in (response.error, json.dumps(doc), human.stdout.decode()):
        assert SECRET.decode() not in text
