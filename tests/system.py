"""relayd + relay-hub as real processes and an HTTP destination: the e2e test harness."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.db import open_db
from tests.destination import Destination, RawDestination
from tests.processes import BIN, Daemon, free_port

ENDPOINTS = ("github", "stripe", "camera")
SECRET = "e2e-shared-secret-4f1c"


class System:
    """relayd + relay-hub + destination, with helpers to drive and inspect them."""

    def __init__(self, tmp_path: Path, destination: Destination | RawDestination) -> None:
        self.tmp = tmp_path
        self.destination = destination
        self.grpc_port = free_port()
        (tmp_path / "hub.secret").write_text(SECRET + "\n")
        (tmp_path / "hub.secret").chmod(0o600)
        self.edge_config = tmp_path / "relayd.toml"
        endpoints = "".join(
            f'[[endpoints]]\nid = "{ep}"\ndestination_url = "{destination.url("/" + ep)}"\n'
            for ep in ENDPOINTS)
        self.edge_config.write_text(f"""
[relay]
grpc_listen = "127.0.0.1:{self.grpc_port}"
heartbeat_interval = 1
stale_timeout = 3
retry_initial = 0.2
retry_max = 1
poll_interval = 0.2
shutdown_grace = 1
[ingress]
listen = "127.0.0.1:{free_port()}"
rate = 0  # the tests post floods from one address
[admin]
listen = "127.0.0.1:{free_port()}"
[store]
path = "relayd.db"
[hub]
id = "home"
secret_file = "hub.secret"
{endpoints}""")
        self.edge = Daemon([str(BIN / "relayd"), "--config", str(self.edge_config)],
                           tmp_path / "relayd.log")
        self.hub = self.make_hub("relay-hub", "hub.secret")
        self.ingress = self.admin = ""

    def make_hub(self, name: str, secret_file: str) -> Daemon:
        config = self.tmp / f"{name}.toml"
        config.write_text(f"""
[hub]
id = "home"
edge_url = "http://127.0.0.1:{self.grpc_port}"
secret_file = "{secret_file}"
heartbeat_interval = 1
stale_timeout = 3
reconnect_initial = 0.2
reconnect_max = 1
""")
        return Daemon([str(BIN / "relay-hub"), "--config", str(config)],
                      self.tmp / f"{name}.log")

    async def start_edge(self) -> None:
        await self.edge.start()
        match = await self.edge.wait_log(r"relayd ready grpc=\S+ ingress=(\S+) admin=(\S+)")
        self.ingress, self.admin = match.group(1), match.group(2)

    async def start_hub(self) -> None:
        await self.hub.start()
        await self.hub.wait_log("connected to the edge")

    async def post(self, client: httpx.AsyncClient, endpoint: str, body: bytes,
                   headers: dict[str, str] | None = None) -> str:
        response = await client.post(f"http://{self.ingress}/h/{endpoint}", content=body,
                                     headers=headers or {})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def status(self) -> dict:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://{self.admin}/api/status")).json()

    def db_statuses(self) -> dict[str, str]:
        with open_db(self.tmp / "relayd.db") as db:
            return dict(db.execute("SELECT id, status FROM webhooks").fetchall())

    async def wait_queue(self, within: float = 30.0, at_least: dict[str, int] | None = None,
                         **expected: int) -> dict:
        """Wait until the queue counts equal ``expected`` (and reach ``at_least``)."""
        with trio.fail_after(within):
            while True:
                doc = await self.status()
                queue = doc["queue"]
                if all(queue[k] == v for k, v in expected.items()) and \
                        all(queue[k] >= v for k, v in (at_least or {}).items()):
                    return doc
                await trio.sleep(0.05)
