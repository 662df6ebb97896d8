"""Acceptance criterion 9: the real ``relayd`` console script as a subprocess."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.db import open_db
from tests.processes import BIN, write_edge_config

READY = re.compile(r"relayd ready grpc=(\S+) ingress=(\S+) admin=(\S+)")


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """The config the tests of a relayd process use: its database under ``state/``."""
    return write_edge_config(tmp_path, extra=extra, store="state/relayd.db")


class RelaydProcess:
    """``relayd`` started from its console script; stderr is collected by a thread."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([str(BIN / "relayd"), "--config", str(config)],
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.addresses: dict[str, str] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append(line)
                match = READY.search(line)
                if match:
                    self.addresses = dict(zip(("grpc", "ingress", "admin"), match.groups(),
                                              strict=True))
                    self._ready.set()
        self._ready.set()

    def wait_ready(self) -> dict[str, str]:
        assert self._ready.wait(30), "relayd did not become ready"
        assert self.addresses, f"relayd exited early: {''.join(self.lines)}"
        return self.addresses

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self._reader.join()
        return code

    def log(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self.lines)


@pytest.fixture
def relayd_process(tmp_path: Path) -> Iterator[RelaydProcess]:
    process = RelaydProcess(write_config(tmp_path))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_relayd_serves_and_stops_gracefully_on_sigterm(relayd_process: RelaydProcess,
                                                        tmp_path: Path) -> None:
    proc, addresses = relayd_process.proc, relayd_process.addresses
    response = httpx.post(f"http://{addresses['ingress']}/h/github", content=b"{\"a\": 1}")
    assert response.status_code == 202
    status = subprocess.run([str(BIN / "relayctl"), "status", "--admin",
                             f"http://{addresses['admin']}"], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0 and "pending:     1" in status.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    rest = relayd_process.log()
    assert "relayd stopped" in rest
    assert "process-test-secret" not in rest
    # the webhook is on disk after the stop
    with open_db(tmp_path / "state" / "relayd.db") as db:
        assert db.execute("SELECT body FROM webhooks").fetchall() == [(b"{\"a\": 1}",)]


def test_relayd_config_error_names_the_key_and_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="bogus = 1\n")
    result = subprocess.run([str(BIN / "relayd"), "--config", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "endpoints[0].bogus: unknown key" in result.stderr


def test_relayd_missing_secret_is_a_startup_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "hub.secret").unlink()
    result = subprocess.run([str(BIN / "relayd"), "--config", str(config)], capture_output=True,
                            text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "hub.secret does not exist" in result.stderr


def test_relayd_notifies_systemd_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    import os
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
        proc = subprocess.Popen([str(BIN / "relayd"), "--config", str(write_config(tmp_path))],
                                env=env, stderr=subprocess.DEVNULL)
        try:
            received = [notify.recv(4096).decode()]
            assert received == ["READY=1"]
            # pings every WATCHDOG_USEC / 2
            received += [notify.recv(4096).decode() for _ in range(3)]
            assert received[1:] == ["WATCHDOG=1"] * 3
            proc.send_signal(signal.SIGTERM)
            while (message := notify.recv(4096).decode()) == "WATCHDOG=1":
                pass
            assert message == "STOPPING=1"
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
