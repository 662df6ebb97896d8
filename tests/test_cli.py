"""The three commands as a newcomer meets them: the real console scripts as subprocesses."""

from __future__ import annotations

import http.server
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.db import open_db
from tests.test_daemon_process import RelaydProcess, write_config

BIN = Path(sys.executable).parent
SECRET = "process-test-secret"  # what write_config puts in hub.secret


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=cwd, env=env)


def set_key(config: Path, line: str, new: str) -> None:
    text = config.read_text()
    assert line in text
    config.write_text(text.replace(line, new, 1))


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class LineReader:
    """Lines of a subprocess's pipe, collected by a thread; `wait_for` a pattern."""

    def __init__(self, pipe: object) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        with pipe:  # type: ignore[attr-defined]
            for line in pipe:  # type: ignore[attr-defined]
                self._queue.put(line)
        self._queue.put(None)

    def join(self) -> None:
        """After the process ended: wait until the pipe is read to its end and closed."""
        self._thread.join(timeout=10)

    def wait_for(self, pattern: str, count: int = 1, within: float = 20.0) -> re.Match[str]:
        """Wait until ``count`` lines match ``pattern``; the first match."""
        regex = re.compile(pattern)
        while len(matches := [m for m in map(regex.search, self.lines) if m]) < count:
            line = self._queue.get(timeout=within)
            assert line is not None, f"output ended without {pattern!r}: {''.join(self.lines)}"
            self.lines.append(line)
        return matches[0]

    def text(self) -> str:
        return "".join(self.lines)


# -- relayd --check ------------------------------------------------------------------------


def test_relayd_check_prints_a_summary_opens_the_store_and_binds_nothing(
        tmp_path: Path, busy_port: int) -> None:
    config = write_config(tmp_path)
    # the ingress address is taken: a check that bound it would fail
    set_key(config, 'listen = "127.0.0.1:0"\n[admin]',
            f'listen = "127.0.0.1:{busy_port}"\n[admin]')
    result = run([str(BIN / "relayd"), "--check", "--config", str(config)])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"127.0.0.1:{busy_port} (ingress.listen)" in out
    assert "127.0.0.1:0 (relay.grpc_listen" in out and "127.0.0.1:0 (admin.listen" in out
    assert f"store:      {tmp_path / 'state' / 'relayd.db'} (opened: pending 0" in out
    assert "id 'home'" in out and f"secret from {tmp_path / 'hub.secret'}" in out
    assert "github -> http://127.0.0.1:9/github (senders not verified)" in out
    assert SECRET not in out + result.stderr
    with open_db(tmp_path / "state" / "relayd.db") as db:  # created and migrated
        assert db.execute("SELECT COUNT(*) FROM webhooks").fetchone() == (0,)


def test_relayd_check_names_the_key_of_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="bogus = 1\n")
    result = run([str(BIN / "relayd"), "--check", "--config", str(config)])
    assert result.returncode == 2
    assert "endpoints[0].bogus: unknown key" in result.stderr


@pytest.mark.parametrize(("store", "expected"), [
    ("state", "store.path: {tmp}/state is a folder; it must be the database file"),
    ("hub.secret/relayd.db", "store.path: {tmp}/hub.secret/relayd.db: {tmp}/hub.secret is a "
                             "file, not a folder"),
])
def test_relayd_check_names_store_path_when_the_store_cannot_be_opened(
        tmp_path: Path, store: str, expected: str) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    set_key(config, 'path = "state/relayd.db"', f'path = "{store}"')
    result = run([str(BIN / "relayd"), "--check", "--config", str(config)])
    assert result.returncode == 2
    assert expected.format(tmp=tmp_path) in result.stderr


# -- start-up errors that name what to fix ---------------------------------------------------


def test_relayd_names_store_path_when_it_cannot_open_the_store(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    set_key(config, 'path = "state/relayd.db"', 'path = "state"')
    result = run([str(BIN / "relayd"), "--config", str(config)])
    assert result.returncode == 1
    assert f"could not run: store.path: {tmp_path}/state is a folder" in result.stderr


@pytest.mark.parametrize(("key", "line"), [
    ("relay.grpc_listen", 'grpc_listen = "127.0.0.1:0"'),
    ("ingress.listen", 'listen = "127.0.0.1:0"\n[admin]'),
    ("admin.listen", '[admin]\nlisten = "127.0.0.1:0"'),
])
def test_relayd_port_in_use_names_the_key_and_exits_1(tmp_path: Path, busy_port: int,
                                                      key: str, line: str) -> None:
    config = write_config(tmp_path)
    set_key(config, line, line.replace("127.0.0.1:0", f"127.0.0.1:{busy_port}"))
    result = run([str(BIN / "relayd"), "--config", str(config)])
    assert result.returncode == 1
    assert f"could not run: {key}: 127.0.0.1:{busy_port} is already in use" in result.stderr


def test_secret_file_errors_show_the_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write_config(tmp_path / "conf")
    (tmp_path / "conf" / "hub.secret").unlink()
    # a relative --config: the secret file's path in it is relative too
    result = run([str(BIN / "relayd"), "--config", "conf/relayd.toml"], cwd=tmp_path,
                 env={"PATH": os.environ["PATH"]})
    assert result.returncode == 2
    assert f"hub.secret_file: {tmp_path}/conf/hub.secret does not exist" in result.stderr


def test_relayd_without_endpoints_warns_at_start_up(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    set_key(config, '[[endpoints]]\nid = "github"\ndestination_url = "http://127.0.0.1:9/github"',
            "")
    relayd = RelaydProcess(config)
    try:
        relayd.wait_ready()
        relayd.proc.send_signal(signal.SIGTERM)
        assert relayd.proc.wait(timeout=10) == 0
    finally:
        relayd.stop()
    assert "WARNING relayd.edge.daemon: no [[endpoints]] configured: every webhook will be " \
           "answered 404" in relayd.log()


# -- --version, --help, relayctl with no arguments -------------------------------------------


@pytest.mark.parametrize("command", ["relayd", "relayctl", "relay-hub"])
def test_every_command_has_version(command: str) -> None:
    result = run([str(BIN / command), "--version"])
    assert result.returncode == 0
    assert result.stdout == f"{command} {version('relayd')}\n"


def _option_helps(help_text: str) -> dict[str, str]:
    """``--option`` -> its help text, from argparse's ``options:`` section."""
    section = help_text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    helps: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        if match := re.match(r"  (-[^\s,]+(?:, --\S+)?)( [A-Z]+)?(\s+.*)?$", line):
            name = match.group(1).split(", ")[-1]
            helps[name] = match.group(3) or ""
        else:
            helps[name] += line
    return helps


@pytest.mark.parametrize(("command", "secret_env"), [
    ("relayd", "RELAYD_HUB_SECRET"), ("relay-hub", "RELAY_HUB_SECRET"), ("relayctl", None),
])
def test_help_gives_each_option_its_default_and_names_the_secret_variable(
        command: str, secret_env: str | None) -> None:
    result = run([str(BIN / command), "--help"])
    assert result.returncode == 0
    helps = _option_helps(result.stdout)
    assert "--config" in helps
    for option, text in helps.items():
        if option not in ("--help", "--version"):
            assert "default" in text or "required" in text, (option, text)
    if secret_env is not None:
        assert re.search(rf"^  {secret_env} +the hub secret", result.stdout, re.MULTILINE)


def test_relayctl_without_arguments_prints_its_help_and_exits_2() -> None:
    result = run([str(BIN / "relayctl")])
    assert result.returncode == 2
    assert result.stderr.startswith("usage: relayctl")
    assert "options:" in result.stderr and "--admin URL" in result.stderr
    assert "status  what relayd is doing" in result.stderr


# -- the sink ----------------------------------------------------------------------------------


class SinkProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "relayd.sink", *args],
                                     stdout=subprocess.PIPE, text=True)
        self.output = LineReader(self.proc.stdout)
        match = self.output.wait_for(r"sink: listening on (http://\S+);")
        self.url = match.group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.output.join()


@pytest.fixture
def sink() -> Iterator[SinkProcess]:
    process = SinkProcess("0")
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.stop()


def test_sink_answers_200_to_any_method_and_path_and_prints_what_arrives(
        sink: SinkProcess) -> None:
    response = httpx.post(f"{sink.url}/webhook/a?x=1&y=two", content=b'{"hello": "world"}',
                          headers={"content-type": "application/json", "x-custom": "abc"})
    assert response.status_code == 200
    sink.output.wait_for(r'^  body: \{"hello": "world"\}$')
    assert re.search(r'^POST /webhook/a\?x=1&y=two \(18 bytes from 127\.0\.0\.1:\d+\) -> 200\n'
                     r'(  .*\n)*  x-custom: abc\n', sink.output.text(), re.MULTILINE)
    assert "  content-type: application/json\n" in sink.output.text()
    assert httpx.request("DELETE", f"{sink.url}/").status_code == 200
    sink.output.wait_for(r"^DELETE / \(0 bytes")
    assert httpx.put(f"{sink.url}/bin", content=b"\x00\xff" + b"z" * 600).status_code == 200
    sink.output.wait_for(r"^  body: b'\\x00\\xffzzz.*' \.\.\. \(102 more bytes\)$")
    assert sink.stop() == 0


def test_sink_answers_the_status_it_is_given() -> None:
    sink = SinkProcess("0", "--status", "503")
    try:
        assert httpx.get(sink.url).status_code == 503
        sink.output.wait_for(r"^GET / \(0 bytes from \S+\) -> 503$")
    finally:
        assert sink.stop() == 0


# -- relay-hub pointed at something that is not relayd's gRPC port ---------------------------


def hub_config(tmp_path: Path, edge_url: str) -> Path:
    config = tmp_path / "relay-hub.toml"
    config.write_text(f"""
[hub]
edge_url = "{edge_url}"
secret_file = "hub.secret"
connect_timeout = 2
reconnect_initial = 0.05
reconnect_max = 0.1
""")
    return config


def test_hub_check_against_the_ingress_port_says_it_is_not_a_relayd_grpc_port(
        tmp_path: Path) -> None:
    relayd = RelaydProcess(write_config(tmp_path))
    try:
        ingress = relayd.wait_ready()["ingress"]
        result = run([str(BIN / "relay-hub"), "--check", "--config",
                      str(hub_config(tmp_path, f"http://{ingress}"))])
    finally:
        relayd.stop()
    assert result.returncode == 1
    assert result.stdout == (
        f"cannot connect to http://{ingress} as hub 'home': this is not a relayd gRPC port "
        f"(HTTP 404 from GET http://{ingress}/); hub.edge_url must be the address of relayd's "
        "relay.grpc_listen, not of its ingress or admin listener\n")


class CountingHTTP1Handler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1 server (it answers the HTTP/2 preface with an HTTP/1 error)."""

    gets = 0

    def do_GET(self) -> None:
        type(self).gets += 1
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_hub_says_once_per_failure_episode_that_the_edge_url_is_not_relayd(
        tmp_path: Path) -> None:
    (tmp_path / "hub.secret").write_text("hub-secret\n")
    (tmp_path / "hub.secret").chmod(0o600)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHTTP1Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    hub = subprocess.Popen([str(BIN / "relay-hub"), "--config", str(hub_config(tmp_path, url))],
                           stderr=subprocess.PIPE, text=True)
    log = LineReader(hub.stderr)
    try:
        log.wait_for(r"not connected to the edge", count=4)  # four failed attempts
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(timeout=10) == 0
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
        log.join()
        server.shutdown()
        server.server_close()
    retries = [line for line in log.lines if "not connected to the edge" in line]
    assert len(retries) >= 4
    assert all(f"(not a relayd gRPC port: HTTP 404 from GET {url}/)" in line for line in retries)
    explained = [line for line in log.lines if "this is not a relayd gRPC port" in line]
    assert len(explained) == 1 and " ERROR " in explained[0]
    assert "hub.edge_url must be the address of relayd's relay.grpc_listen" in explained[0]
    assert CountingHTTP1Handler.gets == 1  # probed once, not on every retry
