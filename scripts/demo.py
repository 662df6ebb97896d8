"""The relay in one terminal: relayd, relay-hub and a printing destination on loopback.

Run with ``scripts/demo`` (``--keep`` keeps its folder). It starts the printing sink
(``python -m relayd.sink``), relayd and relay-hub, printing each command it runs; POSTs
a few webhooks to the edge; shows them arriving at the sink through the hub; runs
``relayctl status`` and stops everything. Configs, database and logs live in a temporary
folder that is removed at the end, unless ``--keep`` is given or something failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
# sink lines that start a request delivered to one of the demo's endpoints
DELIVERED_PREFIX = "POST /api/webhook/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shown(args: list[str]) -> str:
    """``args`` as a shell command, programs under the current folder shown relative."""
    first = os.path.relpath(args[0])
    return shlex.join([args[0] if first.startswith("..") else first, *args[1:]])


class Sink:
    """``python -m relayd.sink PORT``, its output printed with a ``sink |`` prefix."""

    def __init__(self, port: int) -> None:
        self.args = [sys.executable, "-m", "relayd.sink", str(port)]
        self.delivered = 0
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(DELIVERED_PREFIX):
                self.delivered += 1
            print(f"  sink | {line}", end="", flush=True)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        return code


def wait_until(check: Callable[[], bool], what: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def write_configs(tmp: Path, grpc: int, ingress: int, admin: int, sink: int) -> None:
    (tmp / "hub.secret").write_text("demo-secret-change-me\n")
    (tmp / "hub.secret").chmod(0o600)
    (tmp / "relayd.toml").write_text(f"""
[relay]
grpc_listen = "127.0.0.1:{grpc}"
[ingress]
listen = "127.0.0.1:{ingress}"
[admin]
listen = "127.0.0.1:{admin}"
[store]
path = "relayd.db"
[hub]
secret_file = "hub.secret"
[[endpoints]]
id = "github"
destination_url = "http://127.0.0.1:{sink}/api/webhook/github"
[[endpoints]]
id = "camera"
destination_url = "http://127.0.0.1:{sink}/api/webhook/camera"
""")
    (tmp / "relay-hub.toml").write_text(f"""
[hub]
edge_url = "http://127.0.0.1:{grpc}"
secret_file = "hub.secret"
""")


def start(name: str, args: list[str], tmp: Path) -> subprocess.Popen[bytes]:
    """Start a daemon with its log in ``tmp``, and say so."""
    log_path = tmp / f"{name}.log"
    print(f"$ {shown(args)} 2> {log_path} &", flush=True)
    with log_path.open("w") as log:
        return subprocess.Popen(args, stderr=log)


def send_webhooks(ingress: int, sink: Sink) -> int:
    """POST each webhook to the edge and wait for the sink to print it."""
    webhooks = [("github", {"action": "push", "ref": "refs/heads/main"}),
                ("camera", {"event": "motion", "zone": "driveway"}),
                ("github", {"action": "closed", "number": 42})]
    headers = {"content-type": "application/json", "x-hub-signature-256": "sha256=demo"}
    for endpoint, payload in webhooks:
        body = json.dumps(payload)
        url = f"http://127.0.0.1:{ingress}/h/{endpoint}"
        header_text = ", ".join(f"{k}: {v}" for k, v in headers.items())
        print(f"demo: POST {url} ({header_text}) {body}", flush=True)
        wanted = sink.delivered + 1
        response = httpx.post(url, content=body.encode(), headers=headers)
        print(f"  -> {response.status_code} {response.text}", flush=True)
        wait_until(lambda wanted=wanted: sink.delivered >= wanted, "delivery")
    return len(webhooks)


def run(tmp: Path) -> bool:
    """The demo itself; True if every process stopped with exit code 0."""
    grpc, ingress, admin, sink_port = free_port(), free_port(), free_port(), free_port()
    write_configs(tmp, grpc, ingress, admin, sink_port)
    sink = Sink(sink_port)
    print(f"$ {shown(sink.args)} &    (its output below, prefixed 'sink |')", flush=True)
    edge = start("relayd", [str(BIN / "relayd"), "--config", str(tmp / "relayd.toml")], tmp)
    hub = start("relay-hub", [str(BIN / "relay-hub"), "--config",
                              str(tmp / "relay-hub.toml")], tmp)
    codes: list[int] = []
    try:
        status_url = f"http://127.0.0.1:{admin}/api/status"
        wait_until(lambda: bool(httpx.get(status_url).json()["connected"]),
                   "the hub to connect")
        print(f"demo: relayd takes webhooks on 127.0.0.1:{ingress}, relay-hub is connected "
              f"to it on 127.0.0.1:{grpc} and delivers to the sink on 127.0.0.1:{sink_port}",
              flush=True)
        sent = send_webhooks(ingress, sink)
        wait_until(lambda: httpx.get(status_url).json()["queue"]["delivered"] == sent,
                   "the acks to be recorded")
        status = [str(BIN / "relayctl"), "status", "--admin", f"http://127.0.0.1:{admin}"]
        print(f"$ {shown(status)}", flush=True)
        subprocess.run(status, check=True)
    finally:
        print("demo: stopping relay-hub, relayd and the sink (SIGTERM)", flush=True)
        for proc in (hub, edge):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=15) for proc in (hub, edge)]
        codes.append(sink.stop())
    print(f"demo: exit codes: relay-hub {codes[0]}, relayd {codes[1]}, sink {codes[2]}")
    if codes != [0, 0, 0]:
        for name in ("relayd", "relay-hub"):
            print(f"--- {tmp / f'{name}.log'}\n{(tmp / f'{name}.log').read_text()}")
    return codes == [0, 0, 0]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description="relayd, relay-hub and a printing sink on loopback: "
        "a few webhooks end to end, then relayctl status.")
    parser.add_argument("--keep", action="store_true",
                        help="keep the folder with the configs, database and logs (default: "
                             "removed at the end, unless something failed)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-demo-"))
    print(f"demo: configs, database and logs in {tmp}", flush=True)
    ok = False
    try:
        ok = run(tmp)
    finally:
        if args.keep or not ok:
            print(f"demo: kept {tmp} ({', '.join(sorted(p.name for p in tmp.iterdir()))})")
        else:
            shutil.rmtree(tmp)
            print(f"demo: removed {tmp} (--keep keeps it)")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
