"""The transport's ceiling: a raw purerpc bidi loop, measured in the same run as relayd.

``python bench/ceiling.py --port P --count N --out FILE``: a plain ``purerpc.Server``
with the generated servicer, as any purerpc user would write it. Once a client says
anything, it yields N 1 KiB WebhookEnvelopes (at most `MAX_UNACKED` outstanding, like
relayd's send buffer) and counts the client's acks; it writes the messages/s (first send
to last ack) to FILE and exits. The client is bench/benchhub.py, the same program the
relay scenario uses.

Following shared/notes/stack.md, the stream handler only yields; the task reading the
acks lives in a nursery owned by ``main``, not inside the generator.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator

import purerpc
import trio

from relayd.wire import pb
from relayd.wire.relay_grpc import RelayServiceServicer

MAX_UNACKED = 1000  # relayd's default buffer_size
PAYLOAD = b"x" * 1024


class Ceiling(RelayServiceServicer):
    def __init__(self, nursery: trio.Nursery, count: int, out: str,
                 finished: trio.Event) -> None:
        self._nursery = nursery
        self._count = count
        self._out = out
        self._finished = finished

    async def Stream(self, messages: AsyncIterator[pb.StreamRequest]
                     ) -> AsyncIterator[pb.StreamResponse]:
        await messages.__anext__()  # the client's hello (its ConnectRequest)
        window = trio.Semaphore(MAX_UNACKED)
        started = time.perf_counter()

        async def count_acks() -> None:
            received = 0
            async for message in messages:
                assert message.WhichOneof("message") == "ack"
                window.release()
                received += 1
                if received == self._count:
                    break
            elapsed = time.perf_counter() - started
            await trio.Path(self._out).write_text(
                json.dumps({"messages": self._count, "seconds": elapsed}))
            self._finished.set()

        self._nursery.start_soon(count_acks)
        for i in range(self._count):
            await window.acquire()
            yield pb.StreamResponse(webhook=pb.WebhookEnvelope(
                id=f"c{i:08d}", endpoint_id="e", payload=PAYLOAD, attempt=1))
        await self._finished.wait()


async def main(args: argparse.Namespace) -> None:
    finished = trio.Event()
    async with trio.open_nursery() as nursery:
        server = purerpc.Server(args.port)
        server.add_service(Ceiling(nursery, args.count, args.out, finished).service)
        await nursery.start(server.serve_async)
        await finished.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    trio.run(main, parser.parse_args())
