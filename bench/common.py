"""Helpers shared by the benchmark scenarios: ports, configs, processes, measurements."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from relayd.edge.store import NewWebhook, Store

BIN = Path(sys.executable).parent
BENCH = Path(__file__).resolve().parent
SECRET = "bench-secret"
PAYLOAD = b"x" * 1024
FILL_BATCH = 10_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_edge_config(folder: Path, endpoints: Sequence[str], *,
                      destination: str = "http://127.0.0.1:9", **relay: Any) -> Path:
    """A relayd.toml in ``folder`` on fresh ports (database ``folder/relayd.db``)."""
    (folder / "hub.secret").write_text(SECRET)
    (folder / "hub.secret").chmod(0o600)
    relay_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in relay.items())
    text = (f'[relay]\ngrpc_listen = "127.0.0.1:{free_port()}"\n{relay_lines}'
            # rate 0: the load generators post from one address
            f'[ingress]\nlisten = "127.0.0.1:{free_port()}"\nrate = 0\n'
            f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[store]\npath = "relayd.db"\n[hub]\nsecret_file = "hub.secret"\n')
    text += "".join(f'[[endpoints]]\nid = "{ep}"\ndestination_url = "{destination}/{ep}"\n'
                    for ep in endpoints)
    path = folder / "relayd.toml"
    path.write_text(text)
    return path


def edge_ports(config: Path) -> dict[str, int]:
    raw = tomllib.loads(config.read_text())
    return {
        "grpc": int(raw["relay"]["grpc_listen"].rsplit(":", 1)[1]),
        "ingress": int(raw["ingress"]["listen"].rsplit(":", 1)[1]),
        "admin": int(raw["admin"]["listen"].rsplit(":", 1)[1]),
    }


async def start(args: Sequence[str], log: Path, env: dict[str, str] | None = None
                ) -> trio.Process:
    with log.open("ab") as out:
        return await trio.lowlevel.open_process(
            list(args), stdout=out, stderr=out, env={**os.environ, **(env or {})})


async def stop(*processes: trio.Process) -> None:
    """SIGTERM, then SIGKILL after 10 s: nothing is left running."""
    for proc in processes:
        if proc.returncode is None:
            proc.terminate()
    with trio.move_on_after(10):
        for proc in processes:
            await proc.wait()
    for proc in processes:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def start_relayd(config: Path, log: Path, log_level: str = "WARNING") -> trio.Process:
    """Start relayd (WARNING logs unless told) and wait until its admin listener answers."""
    proc = await start([str(BIN / "relayd"), "--config", str(config), "--log-level",
                        log_level], log)
    try:
        await wait_status(edge_ports(config)["admin"], lambda doc: True, within=30,
                          process=proc)
    except BaseException:
        await stop(proc)
        raise
    return proc


async def wait_status(admin_port: int, predicate: Callable[[dict[str, Any]], bool], *,
                      within: float = 600, step: float = 0.05,
                      process: trio.Process | None = None) -> dict[str, Any]:
    """Poll ``/api/status`` until ``predicate(doc)``; fail if ``process`` exits first."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(within):
            while True:
                if process is not None and process.returncode is not None:
                    raise RuntimeError(f"process exited with {process.returncode}")
                try:
                    doc = (await client.get(f"http://127.0.0.1:{admin_port}/api/status")).json()
                    if predicate(doc):
                        return doc
                except httpx.HTTPError:
                    pass
                await trio.sleep(step)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


async def fill_pending(db: Path, endpoints: Sequence[str], count: int,
                       body: bytes = PAYLOAD) -> None:
    """Store ``count`` pending webhooks round-robin over ``endpoints``, the way relayd's
    ingest path stores them (`Store.insert_webhooks`, in batches)."""
    now = time.time()
    headers = [("content-type", "application/json"), ("user-agent", "bench")]
    async with Store.open(db) as store:
        for start in range(0, count, FILL_BATCH):
            await store.insert_webhooks([
                NewWebhook(f"b{i:08d}", endpoints[i % len(endpoints)], "POST", headers, body,
                           now)
                for i in range(start, min(count, start + FILL_BATCH))])


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def wait_port(port: int, within: float = 30) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``."""
    with trio.fail_after(within):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return
