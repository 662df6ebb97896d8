"""End to end through real processes: POST -> relayd -> relay-hub -> HTTP destination.

Usage: python bench/e2e.py [--count 1000] [--endpoints 1 10] [--concurrency 16]

relayd and relay-hub run from their console scripts; the destination (answers 204 at
once) and the HTTP client run in this process. Reports, per endpoint count, the time from
the first POST to the last delivery at the destination, and webhooks/s.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from relayd.config import ListenAddress
from relayd.http import handle_lifespan, serve_http

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_once(count: int, endpoints: int, concurrency: int) -> float:
    received = 0
    all_in = trio.Event()

    async def destination(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal received
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        received += 1
        if received == count:
            all_in.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        grpc, ingress, admin = free_port(), free_port(), free_port()
        async with trio.open_nursery() as nursery:
            dest = await nursery.start(lambda task_status: serve_http(
                destination, ListenAddress("127.0.0.1", 0), name="dest",
                shutdown_trigger=trio.sleep_forever, graceful_seconds=0.1,
                task_status=task_status))
            ids = [f"ep{i}" for i in range(endpoints)]
            (tmp / "secret").write_text("bench")
            (tmp / "relayd.toml").write_text(
                f'[relay]\ngrpc_listen = "127.0.0.1:{grpc}"\n[ingress]\nlisten = '
                f'"127.0.0.1:{ingress}"\n[admin]\nlisten = "127.0.0.1:{admin}"\n[store]\n'
                f'path = "db"\n[hub]\nsecret_file = "secret"\n' + "".join(
                    f'[[endpoints]]\nid = "{i}"\ndestination_url = "http://{dest}/{i}"\n'
                    for i in ids))
            (tmp / "hub.toml").write_text(
                f'[hub]\nedge_url = "http://127.0.0.1:{grpc}"\nsecret_file = "secret"\n')
            log = (tmp / "log").open("w")
            procs = [
                await trio.lowlevel.open_process(
                    [str(BIN / "relayd"), "--config", str(tmp / "relayd.toml"),
                     "--log-level", "WARNING"], stderr=log),
                await trio.lowlevel.open_process(
                    [str(BIN / "relay-hub"), "--config", str(tmp / "hub.toml"),
                     "--log-level", "WARNING"], stderr=log),
            ]
            try:
                async with httpx.AsyncClient() as client:
                    while True:
                        try:
                            doc = (await client.get(f"http://127.0.0.1:{admin}/api/status")
                                   ).json()
                            if doc["connected"]:
                                break
                        except httpx.HTTPError:
                            pass
                        await trio.sleep(0.05)
                    started = time.perf_counter()
                    sender, receiver = trio.open_memory_channel[int](count)
                    for i in range(count):
                        sender.send_nowait(i)
                    sender.close()

                    async def poster() -> None:
                        async for i in receiver:
                            response = await client.post(
                                f"http://127.0.0.1:{ingress}/h/{ids[i % endpoints]}",
                                content=b"x" * 1024)
                            assert response.status_code == 202

                    async with trio.open_nursery() as posters:
                        for _ in range(concurrency):
                            posters.start_soon(poster)
                    await all_in.wait()
                    elapsed = time.perf_counter() - started
            finally:
                for proc in procs:
                    proc.terminate()
                    await proc.wait()
                log.close()
            nursery.cancel_scope.cancel()
    return elapsed


async def main(count: int, endpoint_counts: list[int], concurrency: int) -> None:
    for endpoints in endpoint_counts:
        elapsed = await run_once(count, endpoints, concurrency)
        print(f"{count} webhooks, {endpoints} endpoint(s), {concurrency} concurrent POSTs: "
              f"{elapsed:.2f} s from first POST to last delivery ({count / elapsed:.0f}/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    trio.run(main, args.count, args.endpoints, args.concurrency)
