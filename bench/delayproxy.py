"""A loopback TCP proxy that delays every byte by a fixed time each way (a WAN link).

``python bench/delayproxy.py --listen P --target T --delay 0.025``. Order is kept; the
bandwidth is not limited, only the latency is added.
"""

from __future__ import annotations

import argparse

import trio

# Chunks in transit per direction; far more than a 25 ms link holds on loopback.
IN_TRANSIT = 100_000


async def pump(source: trio.SocketStream, sink: trio.SocketStream, delay: float) -> None:
    send, receive = trio.open_memory_channel[tuple[float, bytes]](IN_TRANSIT)

    async def reader() -> None:
        async with send:
            while data := await source.receive_some(65536):
                await send.send((trio.current_time() + delay, data))

    async def writer() -> None:
        async for due, data in receive:
            await trio.sleep_until(due)
            await sink.send_all(data)
        await sink.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)


async def main(args: argparse.Namespace) -> None:
    async def handle(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", args.target)
        except OSError:
            await client.aclose()
            return
        async with client, upstream:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream, args.delay)
                    nursery.start_soon(pump, upstream, client, args.delay)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    await trio.serve_tcp(handle, args.listen, host="127.0.0.1")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.025)
    trio.run(main, parser.parse_args())
