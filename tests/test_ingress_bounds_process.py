"""The ingress bounds in a real ``relayd`` process: peak memory under an upload burst, and
listeners that survive running out of file descriptors."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

import httpx
import trio

from relayd.edge.config import ListenAddress
from tests.db import open_db
from tests.processes import BIN, Daemon, write_edge_config

MIB = 1024 * 1024
MAX_BODY = 8 * MIB
MAX_INFLIGHT = 32 * MIB
UPLOADS = 40
# The bound on relayd's peak RSS above idle: the reserved bodies are held up to three
# times over (the body as received; SQLite's copies while it commits a batch, which the
# multi-row INSERT makes of every body in the batch at once; and the chunks a body
# arrived in, joined once more), plus hypercorn's buffers for every open upload (up to
# 10 x 64 KiB each: its app queue of received chunks) and 16 MiB for the allocator.
# Measured: 90-102 MiB over idle on 3.11, up to 129 MiB on 3.13 (1 run in 4); with no
# bound (max_inflight_bytes = 400 MiB) the same burst took 845-990 MiB over idle.
HYPERCORN_BUFFER_PER_UPLOAD = 10 * 64 * 1024
PEAK_OVER_IDLE = 3 * MAX_INFLIGHT + UPLOADS * HYPERCORN_BUFFER_PER_UPLOAD + 16 * MIB
READY = r"relayd ready grpc=\S+ ingress=(\S+) admin=(\S+)"
EMFILE_LOGGED = "accept returned EMFILE"




def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


async def test_upload_burst_keeps_peak_rss_within_max_inflight_bytes(tmp_path: Path) -> None:
    config = write_edge_config(tmp_path, f"max_body_bytes = {MAX_BODY}\n"
                                    f"max_inflight_bytes = {MAX_INFLIGHT}")
    daemon = Daemon([str(BIN / "relayd"), "--config", str(config)], tmp_path / "relayd.log")
    await daemon.start()
    try:
        ingress = (await daemon.wait_log(READY)).group(1)
        assert daemon.process is not None
        pid = daemon.process.pid
        # one request first, so the idle baseline includes what serving any request loads
        async with httpx.AsyncClient() as client:
            warm = await client.post(f"http://{ingress}/h/github", content=b"warm")
            assert warm.status_code == 202
        idle_kib = memory_kib(pid, "VmRSS")
        body = b"b" * MAX_BODY
        answers: dict[int, int | str] = {}
        accepted: list[str] = []
        limits = httpx.Limits(max_connections=UPLOADS, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def upload(seq: int) -> None:
                try:
                    response = await client.post(f"http://{ingress}/h/github", content=body,
                                                 headers={"x-seq": str(seq)})
                except httpx.TransportError as exc:  # reset while sending: no answer
                    answers[seq] = type(exc).__name__
                    return
                answers[seq] = response.status_code
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                if response.status_code == 503:
                    assert response.headers["retry-after"].isdigit()

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for seq in range(UPLOADS):
                        nursery.start_soon(upload, seq)
        peak_kib = memory_kib(pid, "VmHWM")
    finally:
        await daemon.stop()
    codes = [a for a in answers.values() if isinstance(a, int)]
    print(f"idle {idle_kib} KiB, peak {peak_kib} KiB, answers "
          f"{ {a: list(answers.values()).count(a) for a in set(answers.values())} }")
    # every upload answered is either stored (202) or refused (503); the budget admits
    # at least max_inflight_bytes / max_body_bytes of them at once
    assert set(codes) <= {202, 503} and len(accepted) >= MAX_INFLIGHT // MAX_BODY
    with open_db(tmp_path / "relayd.db") as db:
        stored = dict(db.execute("SELECT id, length(body) FROM webhooks").fetchall())
    assert all(stored.get(wid) == MAX_BODY for wid in accepted)
    assert len(stored) == len(accepted) + 1  # and the warm-up
    assert (peak_kib - idle_kib) * 1024 <= PEAK_OVER_IDLE


async def test_listeners_survive_running_out_of_file_descriptors(tmp_path: Path) -> None:
    # max_connections above the descriptors left, so accept itself fails with EMFILE
    config = write_edge_config(tmp_path, "max_connections = 8\nheader_timeout = 30")
    daemon = Daemon([str(BIN / "relayd"), "--config", str(config)], tmp_path / "relayd.log")
    await daemon.start()
    clients: list[trio.SocketStream] = []
    try:
        match = await daemon.wait_log(READY)
        ingress, admin = (ListenAddress.parse("", address) for address in match.groups())
        assert daemon.process is not None
        pid = daemon.process.pid
        async with httpx.AsyncClient() as client:  # warm up: every file relayd needs is open
            assert (await client.post(f"http://{ingress}/h/github", content=b"1")).status_code \
                == 202
            assert (await client.get(f"http://{admin}/api/status")).status_code == 200
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid) + 4, hard))
        # idle connections take the descriptors left; the rest wait in the backlogs
        clients = [await open_stream(ingress) for _ in range(12)]
        status = await open_stream(admin)
        clients.append(status)
        await status.send_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
        # both accept loops keep retrying (every 0.1 s) while no descriptor is free, long
        # enough that a slot lost per failed accept would use up all 8
        await daemon.wait_log(f"(?:{EMFILE_LOGGED}[\\s\\S]*?){{20}}")
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        # descriptors free again: the waiting requests are served
        with trio.fail_after(10):
            assert (await read_all(status)).startswith(b"HTTP/1.1 200 ")
            for stream in clients[:-1]:
                await stream.send_all(POST_AND_CLOSE)
                assert (await read_all(stream)).startswith(b"HTTP/1.1 202 ")
        for stream in clients:
            await stream.aclose()
        # and no slot was lost: max_connections connections are served at once
        clients = [await open_stream(ingress) for _ in range(8)]
        with trio.fail_after(10):
            for stream in clients:
                await stream.send_all(POST_AND_CLOSE.replace(b"Connection: close", b"X: y"))
                assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 202 ")
        assert daemon.process.returncode is None
    finally:
        for stream in clients:
            await stream.aclose()
        await daemon.stop()


POST_AND_CLOSE = (b"POST /h/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: 2\r\n\r\n{}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def open_stream(address: ListenAddress) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port)


async def read_all(stream: trio.SocketStream) -> bytes:
    answer = b""
    while data := await stream.receive_some(65536):
        answer += data
    return answer
