"""Measure how long N stored webhooks take to be delivered and acked through a hub client.

Usage: python bench/drain.py [--count 10000] [--endpoints 16] [--window 1]

Edge and hub client run in this one process (one trio loop), so this is a figure for the
edge's own overhead, not the multi-process benchmark of issue 4.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from relayd.auth import sign
from relayd.config import parse_config
from relayd.daemon import Relayd
from relayd.grpc_client import open_relay_stream
from relayd.store import NewWebhook, Store
from relayd.wire import pb

SECRET = "bench-secret"


async def main(count: int, endpoints: int, window: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relayd.db"
        ids = [f"ep{i}" for i in range(endpoints)]
        store = await Store.open(db)
        body = b"x" * 1024
        now = time.time()
        await store.insert_webhooks([
            NewWebhook(f"w{i:07}", ids[i % endpoints], "POST", [("content-type", "x")], body, now)
            for i in range(count)
        ])
        await store.aclose()
        config = parse_config({
            "relay": {"grpc_listen": "127.0.0.1:0", "window": window},
            "ingress": {"listen": "127.0.0.1:0"}, "admin": {"listen": "127.0.0.1:0"},
            "store": {"path": str(db)}, "hub": {"id": "home", "secret_file": ""},
            "endpoints": [{"id": i, "destination_url": "http://127.0.0.1:9/"} for i in ids],
        }, environ={"RELAYD_HUB_SECRET": SECRET})
        daemon = Relayd(config)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(daemon.run)
            start = time.perf_counter()
            async with open_relay_stream("127.0.0.1", addresses.grpc.port) as stream:
                ts = int(time.time())
                await stream.send_message(pb.StreamRequest(connect=pb.ConnectRequest(
                    hub_id="home", timestamp=ts, signature=sign(SECRET.encode(), "home", ts))))
                await stream.receive_message()
                received = 0
                while received < count:
                    message = await stream.receive_message()
                    if message.WhichOneof("message") == "webhook":
                        received += 1
                        await stream.send_message(pb.StreamRequest(ack=pb.DeliveryAck(
                            webhook_id=message.webhook.id, success=True, status_code=200)))
                await daemon.dispatcher.wait_drained()  # the last acks are in the database
            elapsed = time.perf_counter() - start
            counts = await daemon.store.counts()
            assert counts["delivered"] == count, counts
            print(f"{count} webhooks, {endpoints} endpoints, window {window}: "
                  f"{elapsed:.2f} s, {count / elapsed:.0f} webhooks/s delivered-and-acked "
                  f"({daemon.ack_writer.batches} ack transactions)")
            daemon.request_shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--endpoints", type=int, default=16)
    parser.add_argument("--window", type=int, default=1)
    args = parser.parse_args()
    trio.run(main, args.count, args.endpoints, args.window)
