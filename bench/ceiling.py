"""The transport's ceiling: a raw purerpc bidi loop, measured in the same run as relayd.

``python bench/ceiling.py --port P --count N --out FILE``: a gRPC server on relayd's own
listener code (purerpc underneath) that, once a client says anything, sends N 1 KiB
WebhookEnvelopes (at most `MAX_UNACKED` outstanding, like relayd's send buffer) and counts
the client's acks. It writes the messages/s (first send to last ack) to FILE and exits.
The client is bench/benchhub.py, the same one the relay scenario uses.
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from relayd.config import ListenAddress
from relayd.grpc_server import GrpcServer, TcpConnection
from relayd.wire import pb

MAX_UNACKED = 1000  # relayd's default buffer_size
PAYLOAD = b"x" * 1024


async def main(args: argparse.Namespace) -> None:
    finished = trio.Event()

    async def handler(stream: object, transport: TcpConnection) -> None:
        await stream.receive_message()  # type: ignore[attr-defined]  # the client's hello
        window = trio.Semaphore(MAX_UNACKED)
        started = time.perf_counter()

        async def send_all() -> None:
            for i in range(args.count):
                await window.acquire()
                await stream.send_message(pb.StreamResponse(  # type: ignore[attr-defined]
                    webhook=pb.WebhookEnvelope(id=f"c{i:08d}", endpoint_id="e",
                                               payload=PAYLOAD, attempt=1)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            for _ in range(args.count):
                message = await stream.receive_message()  # type: ignore[attr-defined]
                assert message is not None and message.WhichOneof("message") == "ack"
                window.release()
        elapsed = time.perf_counter() - started
        await trio.Path(args.out).write_text(
            json.dumps({"messages": args.count, "seconds": elapsed}))
        finished.set()

    server = GrpcServer(ListenAddress("127.0.0.1", args.port), handler,
                        unauthenticated_timeout=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await finished.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    trio.run(main, parser.parse_args())
