"""relayd out of file descriptors: the gRPC listener waits, and serves again once some close."""

from __future__ import annotations

import os
import resource
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from relayd.edge.config import ListenAddress
from relayd.transport.server import ACCEPT_RETRY_SECONDS
from tests.helpers import HUB_ID, SECRET, TestHub, connect_request
from tests.processes import BIN, Daemon

# File descriptors relayd may open beyond those it holds once ready: few enough that a
# handful of idle connections exhaust them.
SPARE_FDS = 16


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "hub.secret").write_bytes(SECRET + b"\n")
    (tmp_path / "hub.secret").chmod(0o600)
    config = tmp_path / "relayd.toml"
    # A long connect timeout and no per-peer cap: the idle connections from this test
    # (all from 127.0.0.1) are admitted and hold their descriptors until the test closes them.
    config.write_text(f"""
[relay]
grpc_listen = "127.0.0.1:0"
connect_timeout = 60
max_connections = 1000
max_connections_per_peer = 1000
shutdown_grace = 1
[ingress]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "relayd.db"
[hub]
id = "{HUB_ID}"
secret_file = "hub.secret"
[[endpoints]]
id = "alpha"
destination_url = "http://127.0.0.1:9/alpha"
""")
    return config


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_grpc_listener_survives_running_out_of_file_descriptors(tmp_path: Path) -> None:
    edge = Daemon([str(BIN / "relayd"), "--config", str(write_config(tmp_path))],
                  tmp_path / "relayd.log")
    with trio.fail_after(60):
        try:
            await edge.start()
            ready = await edge.wait_log(r"relayd ready grpc=(\S+)")
            host, port = ready.group(1).rsplit(":", 1)
            assert edge.process is not None
            pid = edge.process.pid
            limit = open_fds(pid) + SPARE_FDS
            _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))

            async with AsyncExitStack() as idle:
                # More idle connections than relayd has descriptors left: the rest wait in
                # the listen backlog and relayd's accept fails with EMFILE.
                for _ in range(SPARE_FDS + 8):
                    await idle.enter_async_context(await trio.open_tcp_stream(host, int(port)))
                await edge.wait_log(r"grpc listener cannot accept: EMFILE")
                # A hub connects while relayd is exhausted: its TCP handshake completes in
                # the kernel, but relayd cannot accept it, so no answer comes...
                async with TestHub.open(ListenAddress(host, int(port))) as hub:
                    await hub.send(connect_request())
                    with trio.move_on_after(5 * ACCEPT_RETRY_SECONDS) as unanswered:
                        await hub.recv()
                    assert unanswered.cancelled_caught
                    # ... until descriptors are free again.
                    await idle.aclose()
                    with trio.fail_after(10):
                        message = await hub.recv()
                    assert message is not None and message.connect_response.success
            recovered = await edge.wait_log(r"grpc listener accepting again after (\d+) "
                                            r"failed accepts")
            assert edge.process.returncode is None
            # one line per shortage, not one per failed accept (every ACCEPT_RETRY_SECONDS)
            assert int(recovered.group(1)) >= 2
            assert edge.log_since_start().count("grpc listener cannot accept") == 1
            async with TestHub.connected(ListenAddress(host, int(port))):
                pass  # and a new hub connection is served as usual
        finally:
            await edge.stop()
