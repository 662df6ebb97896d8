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

from relayd.common.batching import take_batch
from relayd.common.signing import sign
from relayd.transport.client import open_relay_stream
from relayd.transport.stream import BatchStream
from relayd.wire import ORDERED_PIPELINE, pb

SECRET = b"bench-secret"
ACK_BUFFER = 1024


async def main(args: argparse.Namespace) -> None:
    latencies: list[float] = []
    acks_send, acks_receive = trio.open_memory_channel[pb.StreamRequest](ACK_BUFFER)

    async def write_acks(stream: BatchStream) -> None:
        # like relay-hub: what queued up while the last write ran goes out in one write
        async for first in acks_receive:
            await stream.send_messages(take_batch(first, acks_receive, ACK_BUFFER))

    async with open_relay_stream("127.0.0.1", args.port, connect_timeout=10) as stream, \
            trio.open_nursery() as nursery:
        ts = int(time.time())
        await stream.send_message(pb.StreamRequest(connect=pb.ConnectRequest(
            hub_id="home", timestamp=ts, signature=sign(SECRET, "home", ts),
            capabilities=[ORDERED_PIPELINE] if args.pipeline else [])))
        nursery.start_soon(write_acks, stream)
        while (message := await stream.receive_message()) is not None:
            if message.WhichOneof("message") != "webhook":
                continue
            webhook = message.webhook
            ack = pb.StreamRequest(ack=pb.DeliveryAck(webhook_id=webhook.id, success=True,
                                                      status_code=200))
            if args.batch_acks:
                await acks_send.send(ack)
            else:
                await stream.send_message(ack)
            if args.latency_out and "x-bench-t0" in webhook.headers:
                latencies.append(time.time() - float(webhook.headers["x-bench-t0"]))
                if len(latencies) == args.expect:
                    await trio.Path(args.latency_out).write_text(json.dumps(latencies))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--batch-acks", action="store_true",
                        help="coalesce queued acks into one write (as relay-hub does)")
    parser.add_argument("--latency-out")
    parser.add_argument("--expect", type=int, default=0)
    trio.run(main, parser.parse_args())
