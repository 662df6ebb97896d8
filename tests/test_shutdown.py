"""Graceful stop: in-flight acks land within the grace period, nothing accepted is lost."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from relayd.edge.daemon import Relayd
from tests.db import open_db
from tests.helpers import TestHub, make_config, post


async def test_graceful_stop_lets_in_flight_ack_land(tmp_path: Path) -> None:
    daemon = Relayd(make_config(tmp_path, shutdown_grace=5))
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(daemon.run)
        delivered = (await post(addresses.ingress, "alpha", b"1")).json()["id"]
        waiting = (await post(addresses.ingress, "alpha", b"2")).json()["id"]
        async with TestHub.connected(addresses.grpc) as hub:
            assert (await hub.recv_webhook()).id == delivered
            daemon.request_shutdown()
            # the ingress stops taking requests...
            with trio.fail_after(5):
                while True:
                    try:
                        await post(addresses.ingress, "alpha", b"late")
                    except httpx.ConnectError:
                        break
                    await trio.sleep(0.01)
            # ...but the ack of the in-flight webhook still lands, then the stream ends
            await hub.ack(delivered)
            # (generous: on a loaded machine the ingress may use its whole graceful period)
            with trio.fail_after(15):
                while await hub.recv() is not None:
                    pass
    with open_db(daemon.config.store.path) as db:
        rows = dict(db.execute("SELECT id, status FROM webhooks WHERE id IN (?, ?)",
                               (delivered, waiting)).fetchall())
    assert rows == {delivered: "delivered", waiting: "pending"}
