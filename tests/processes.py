"""Run relayd and relay-hub from their console scripts, as a user would, for e2e tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port that was free a moment ago (for a daemon that must keep its port on restart)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """A console-script subprocess whose stderr goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None
                 ) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: trio.Process | None = None
        self._offset = 0

    async def start(self) -> None:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        return self.log()[self._offset:]

    async def wait_log(self, pattern: str, within: float = 20.0) -> re.Match[str]:
        """Wait for ``pattern`` in what this run logged; fail if the process exits first."""
        regex = re.compile(pattern)
        with trio.fail_after(within):
            while True:
                match = regex.search(self.log_since_start())
                if match:
                    return match
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.args[0]} exited: {self.log_since_start()}")
                await trio.sleep(0.02)

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, within: float = 15.0) -> int:
        assert self.process is not None
        with trio.fail_after(within):
            return await self.process.wait()

    async def stop(self) -> None:
        """Kill if still running (test clean-up: nothing is left behind)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await self.process.wait()


def write_edge_config(tmp_path: Path, ingress: str = "", *, extra: str = "",
                      store: str = "relayd.db") -> Path:
    """relayd.toml (and hub.secret) in ``tmp_path`` for a relayd process on loopback with one
    endpoint, ``github``; ``ingress``: extra lines for the ``[ingress]`` table, ``extra``: lines
    at the end (in the endpoint's table), ``store``: the database path."""
    (tmp_path / "hub.secret").write_text("process-test-secret\n")
    (tmp_path / "hub.secret").chmod(0o600)
    config = tmp_path / "relayd.toml"
    ingress_lines = f"{ingress}\n" if ingress else ""
    config.write_text(f"""
[relay]
grpc_listen = "127.0.0.1:0"
shutdown_grace = 1
[ingress]
listen = "127.0.0.1:0"
{ingress_lines}[admin]
listen = "127.0.0.1:0"
[store]
path = "{store}"
[hub]
id = "home"
secret_file = "hub.secret"
[[endpoints]]
id = "github"
destination_url = "http://127.0.0.1:9/github"
{extra}
""")
    return config
