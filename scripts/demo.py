"""The relay in one terminal: relayd, relay-hub and a tiny destination on loopback.

Run with ``scripts/demo``. It POSTs a few webhooks to the edge, shows them arriving at the
destination through the hub, prints ``relayctl status`` and stops everything. All state
lives in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrintingDestination(http.server.BaseHTTPRequestHandler):
    """Stands in for Home Assistant & co: prints each webhook it receives."""

    received = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(f"  destination <- POST {self.path} {body.decode(errors='replace')!r} "
              f"(X-Relay-Webhook-Id {self.headers['x-relay-webhook-id']}, "
              f"X-Hub-Signature-256 {self.headers.get('x-hub-signature-256')})", flush=True)
        type(self).received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def wait_until(check: object, what: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="relay-demo-") as tmp_name:
        tmp = Path(tmp_name)
        grpc, ingress, admin = free_port(), free_port(), free_port()
        destination = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PrintingDestination)
        dest_port = destination.server_address[1]
        threading.Thread(target=destination.serve_forever, daemon=True).start()
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
destination_url = "http://127.0.0.1:{dest_port}/api/webhook/github"
[[endpoints]]
id = "camera"
destination_url = "http://127.0.0.1:{dest_port}/api/webhook/camera"
""")
        (tmp / "relay-hub.toml").write_text(f"""
[hub]
edge_url = "http://127.0.0.1:{grpc}"
secret_file = "hub.secret"
""")
        print(f"demo: state and logs in {tmp}")
        logs = {name: (tmp / f"{name}.log").open("w") for name in ("relayd", "relay-hub")}
        edge = subprocess.Popen([str(BIN / "relayd"), "--config", str(tmp / "relayd.toml")],
                                stderr=logs["relayd"])
        hub = subprocess.Popen([str(BIN / "relay-hub"), "--config",
                                str(tmp / "relay-hub.toml")], stderr=logs["relay-hub"])
        try:
            status_url = f"http://127.0.0.1:{admin}/api/status"
            wait_until(lambda: httpx.get(status_url).json()["connected"], "the hub to connect")
            print(f"demo: relayd on 127.0.0.1:{ingress} (webhooks), 127.0.0.1:{grpc} (hub), "
                  f"relay-hub connected")
            webhooks = [("github", {"action": "push", "ref": "refs/heads/main"}),
                        ("camera", {"event": "motion", "zone": "driveway"}),
                        ("github", {"action": "closed", "number": 42})]
            for endpoint, payload in webhooks:
                body = json.dumps(payload).encode()
                response = httpx.post(f"http://127.0.0.1:{ingress}/h/{endpoint}", content=body,
                                      headers={"content-type": "application/json",
                                               "x-hub-signature-256": "sha256=demo"})
                print(f"$ curl -X POST --data '{body.decode()}' "
                      f"http://127.0.0.1:{ingress}/h/{endpoint}\n"
                      f"  {response.status_code} {response.text}", flush=True)
            wait_until(lambda: PrintingDestination.received >= len(webhooks), "delivery")
            wait_until(lambda: httpx.get(status_url).json()["queue"]["delivered"] == 3,
                       "the acks to be recorded")
            print(f"$ relayctl status --admin http://127.0.0.1:{admin}", flush=True)
            subprocess.run([str(BIN / "relayctl"), "status", "--admin",
                            f"http://127.0.0.1:{admin}"], check=True)
        finally:
            for proc in (hub, edge):
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=15) for proc in (hub, edge)]
            destination.shutdown()
            for log in logs.values():
                log.close()
        print(f"demo: stopped relay-hub and relayd (exit codes {codes[0]}, {codes[1]})")
        if codes != [0, 0]:
            for name in logs:
                print((tmp / f"{name}.log").read_text())
            raise SystemExit(1)


if __name__ == "__main__":
    main()
