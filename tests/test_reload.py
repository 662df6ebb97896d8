"""Config reload (SIGHUP -> `Relayd.reload`): endpoints change while the hub stays connected."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from relayd.edge.config import load_config
from relayd.edge.daemon import Relayd
from tests.helpers import SECRET, TestHub, post

# A failure bound for the hub's wait (the webhook comes within one dispatch round).
RECEIVE_WITHIN = 5.0


def write_config(tmp_path: Path, endpoints: dict[str, str], *, ingress_listen: str =
                 "127.0.0.1:0") -> Path:
    secret = tmp_path / "hub.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    config = tmp_path / "relayd.toml"
    config.write_text(f"""
[relay]
grpc_listen = "127.0.0.1:0"
heartbeat_interval = 5
stale_timeout = 10
shutdown_grace = 1
[ingress]
listen = "{ingress_listen}"
rate = 0
[admin]
listen = "127.0.0.1:0"
[store]
path = "relayd.db"
[hub]
id = "home"
secret_file = "hub.secret"
""" + "".join(f'[[endpoints]]\nid = "{ep}"\ndestination_url = "{url}"\n'
              for ep, url in endpoints.items()))
    return config


async def start(nursery: trio.Nursery, config: Path) -> Relayd:
    edge = Relayd(load_config(config), config_path=config)
    await nursery.start(edge.run)
    return edge


async def test_reload_adds_an_endpoint_served_to_the_connected_hub(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha"})
    edge = await start(nursery, config)
    assert edge.addresses is not None
    assert (await post(edge.addresses.ingress, "delta")).status_code == 404
    async with TestHub.connected(edge.addresses.grpc) as hub:
        write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha",
                                "delta": "http://127.0.0.1:9/delta"})
        edge.reload()
        assert (await post(edge.addresses.ingress, "delta", b"new")).status_code == 202
        with trio.fail_after(RECEIVE_WITHIN):  # on the connection opened before the reload
            webhook = await hub.recv_webhook()
        assert (webhook.endpoint_id, webhook.destination_url, webhook.payload) == (
            "delta", "http://127.0.0.1:9/delta", b"new")
        await hub.ack(webhook.id)


async def test_removed_endpoint_keeps_its_pending_webhooks_for_its_return(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    both = {"alpha": "http://127.0.0.1:9/alpha", "beta": "http://127.0.0.1:9/beta"}
    config = write_config(tmp_path, both)
    edge = await start(nursery, config)
    assert edge.addresses is not None
    assert (await post(edge.addresses.ingress, "beta", b"kept")).status_code == 202
    write_config(tmp_path, {"alpha": both["alpha"]})
    edge.reload()
    assert (await post(edge.addresses.ingress, "beta")).status_code == 404
    async with TestHub.connected(edge.addresses.grpc) as hub:
        assert (await post(edge.addresses.ingress, "alpha", b"a")).status_code == 202
        first = await hub.recv_webhook()
        assert first.endpoint_id == "alpha"  # beta's pending row is not sent
        await hub.ack(first.id)
        write_config(tmp_path, {**both, "beta": "http://127.0.0.1:9/beta-moved"})
        edge.reload()
        with trio.fail_after(RECEIVE_WITHIN):
            back = await hub.recv_webhook()
        assert (back.endpoint_id, back.payload, back.destination_url) == (
            "beta", b"kept", "http://127.0.0.1:9/beta-moved")


async def test_bad_config_on_reload_keeps_the_old_one_and_names_the_key(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha"})
    edge = await start(nursery, config)
    assert edge.addresses is not None
    write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha", "delta": "ftp://nowhere"})
    edge.reload()
    assert any(record.levelno == logging.ERROR
               and "endpoints[1].destination_url" in record.getMessage()
               and "still running the previous config" in record.getMessage()
               for record in caplog.records)
    assert (await post(edge.addresses.ingress, "alpha")).status_code == 202
    assert (await post(edge.addresses.ingress, "delta")).status_code == 404


async def test_listen_address_change_needs_a_restart_and_is_ignored(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha"})
    edge = await start(nursery, config)
    assert edge.addresses is not None
    write_config(tmp_path, {"alpha": "http://127.0.0.1:9/alpha", "delta": "http://127.0.0.1:9/d"},
                 ingress_listen="127.0.0.1:1")
    edge.reload()
    assert any("ingress.listen changed: needs a restart" in record.getMessage()
               for record in caplog.records)
    # the rest of the reload still applies, on the listener bound at start
    assert (await post(edge.addresses.ingress, "delta")).status_code == 202
