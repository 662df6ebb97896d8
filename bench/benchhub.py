"""A minimal hub for benchmarks: authenticate, ack every webhook at once.

``python bench/benchhub.py --port P [--pipeline] [--latency-out FILE --expect N]``

With ``--latency-out`` it records, for each webhook carrying an ``x-bench-t0`` header
(wall-clock seconds at POST start), how long it took to arrive here, and writes the list
as JSON once ``--expect`` webhooks arrived. It is also the client of the ``ceiling``
scenario, so both measure the same client.
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from relayd.auth import sign
from relayd.grpc_client import open_relay_stream
from relayd.wire import ORDERED_PIPELINE, pb

SECRET = b"bench-secret"


async def main(args: argparse.Namespace) -> None:
    latencies: list[float] = []
    async with open_relay_stream("127.0.0.1", args.port) as stream:
        ts = int(time.time())
        await stream.send_message(pb.StreamRequest(connect=pb.ConnectRequest(
            hub_id="home", timestamp=ts, signature=sign(SECRET, "home", ts),
            capabilities=[ORDERED_PIPELINE] if args.pipeline else [])))
        while (message := await stream.receive_message()) is not None:
            if message.WhichOneof("message") != "webhook":
                continue
            webhook = message.webhook
            await stream.send_message(pb.StreamRequest(ack=pb.DeliveryAck(
                webhook_id=webhook.id, success=True, status_code=200)))
            if args.latency_out and "x-bench-t0" in webhook.headers:
                latencies.append(time.time() - float(webhook.headers["x-bench-t0"]))
                if len(latencies) == args.expect:
                    await trio.Path(args.latency_out).write_text(json.dumps(latencies))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--latency-out")
    parser.add_argument("--expect", type=int, default=0)
    trio.run(main, parser.parse_args())
