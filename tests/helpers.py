"""Test helpers: a config builder and a small purerpc hub client speaking the wire contract."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import trio

from relayd.common.signing import sign
from relayd.edge.config import Config, Endpoint, ListenAddress, parse_config
from relayd.hub.config import HubConfig, parse_hub_config
from relayd.transport.client import ConnectionLost, open_relay_stream
from relayd.wire import pb

SECRET = b"test-secret-0123456789abcdef"
HUB_ID = "home"
ENDPOINTS = ("alpha", "beta", "gamma")
# How long a test hub waits for the TCP (and TLS) connection to the edge.
CONNECT_TIMEOUT = 10.0


def make_config(tmp_path: Path, *, store: dict[str, Any] | None = None,
                ingress: dict[str, Any] | None = None, admin: dict[str, Any] | None = None,
                **relay: Any) -> Config:
    """A config on loopback with free ports, short timers and three endpoints."""
    relay_table = {
        "grpc_listen": "127.0.0.1:0",
        "heartbeat_interval": 5,
        "stale_timeout": 10,
        "connect_timeout": 2,
        "poll_interval": 0.2,
        "retry_initial": 0.2,
        "shutdown_grace": 1,
    }
    relay_table.update(relay)
    raw = {
        "relay": relay_table,
        # rate 0: tests post floods from one address (test_ratelimit sets a rate)
        "ingress": {"listen": "127.0.0.1:0", "max_body_bytes": 65536, "rate": 0,
                    **(ingress or {})},
        "admin": {"listen": "127.0.0.1:0", **(admin or {})},
        "store": {"path": str(tmp_path / "relayd.db"), **(store or {})},
        "hub": {"id": HUB_ID, "secret_file": ""},
        "endpoints": [
            {"id": ep, "destination_url": f"http://127.0.0.1:9/{ep}"} for ep in ENDPOINTS
        ],
    }
    return parse_config(raw, environ={"RELAYD_HUB_SECRET": SECRET.decode()})


def with_endpoints(config: Config, ids: Iterable[str]) -> Config:
    return replace(config, endpoints=tuple(Endpoint(i, f"http://127.0.0.1:9/{i}") for i in ids))


_last_timestamp = 0


def _fresh_timestamp() -> int:
    """Now, but never the same second twice: the edge rejects a reused timestamp as a replay."""
    global _last_timestamp
    _last_timestamp = max(int(time.time()) - 120, _last_timestamp + 1)
    return _last_timestamp


def connect_request(hub_id: str = HUB_ID, *, secret: bytes = SECRET,
                    timestamp: int | None = None, endpoint_ids: Iterable[str] = (),
                    signature: str | None = None,
                    capabilities: Iterable[str] = ()) -> pb.StreamRequest:
    ts = _fresh_timestamp() if timestamp is None else timestamp
    return pb.StreamRequest(connect=pb.ConnectRequest(
        hub_id=hub_id, timestamp=ts,
        signature=sign(secret, hub_id, ts) if signature is None else signature,
        endpoint_ids=list(endpoint_ids), capabilities=list(capabilities),
    ))


class TestHub:
    """One Stream RPC opened to the edge, driven message by message."""

    __test__ = False  # not a pytest class

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    @classmethod
    @asynccontextmanager
    async def open(cls, address: ListenAddress, local_host: str | None = None
                   ) -> AsyncIterator[TestHub]:
        """Open the Stream RPC; leaving the block drops the TCP connection."""
        async with open_relay_stream(address.host, address.port, connect_timeout=CONNECT_TIMEOUT,
                                     local_host=local_host) as stream:
            yield cls(stream)

    @classmethod
    @asynccontextmanager
    async def connected(cls, address: ListenAddress, local_host: str | None = None,
                        **kwargs: Any) -> AsyncIterator[TestHub]:
        """Open a stream and authenticate; fails the test if the edge refuses."""
        async with cls.open(address, local_host) as hub:
            response = await hub.connect(**kwargs)
            assert response.success, response.error
            yield hub

    async def connect(self, **kwargs: Any) -> pb.ConnectResponse:
        await self.stream.send_message(connect_request(**kwargs))
        message = await self.recv()
        assert message is not None and message.WhichOneof("message") == "connect_response"
        return message.connect_response

    async def send(self, message: pb.StreamRequest) -> None:
        await self.stream.send_message(message)

    async def recv(self) -> pb.StreamResponse | None:
        """The next message; None when the stream or the connection ended."""
        try:
            return await self.stream.receive_message()
        except ConnectionLost:
            return None

    async def recv_webhook(self) -> pb.WebhookEnvelope:
        """The next webhook, skipping heartbeats."""
        while True:
            message = await self.recv()
            assert message is not None, "stream ended while waiting for a webhook"
            if message.WhichOneof("message") == "webhook":
                return message.webhook

    async def ack(self, webhook_id: str, *, success: bool = True, status_code: int = 200,
                  error: str = "", permanent: bool = False) -> None:
        await self.send(pb.StreamRequest(ack=pb.DeliveryAck(
            webhook_id=webhook_id, success=success, status_code=status_code,
            error_message=error, permanent_failure=permanent)))

    async def heartbeat(self) -> None:
        await self.send(pb.StreamRequest(heartbeat=pb.Heartbeat(timestamp=int(time.time()))))

    async def wait_end(self) -> int | None:
        """Read until the edge ends the stream; return its grpc-status (None: no trailers)."""
        while await self.recv() is not None:
            pass
        event = self.stream.end_stream_event
        return None if event is None else int(event.status.int_value)


def socket_inodes() -> set[str]:
    """The socket inodes this process holds open (from /proc/self/fd)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target)
    return inodes


async def post(address: ListenAddress, endpoint_id: str, body: bytes = b"{}",
               headers: Any = None, method: str = "POST") -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        return await client.request(method, f"/h/{endpoint_id}", content=body,
                                    headers=headers or {})


async def wait_for(predicate: Any, *, within: float = 5.0, step: float = 0.01) -> None:
    """Wait until ``predicate()`` (sync or async) is true, failing after ``within`` seconds."""
    with trio.fail_after(within):
        while True:
            result = predicate()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await trio.sleep(step)


def make_hub_config(edge: ListenAddress, destinations: dict[str, str] | None = None,
                    *, secret: bytes = SECRET, scheme: str = "http", **hub: Any) -> HubConfig:
    """A relay-hub config for ``edge`` with short timers."""
    table: dict[str, Any] = {
        "id": HUB_ID,
        "edge_url": f"{scheme}://{edge.host}:{edge.port}",
        "secret_file": "",
        "heartbeat_interval": 5,
        "stale_timeout": 10,
        "connect_timeout": 2,
        "reconnect_initial": 0.1,
        "reconnect_max": 0.5,
        "shutdown_grace": 2,
        "delivery_timeout": 5,
    }
    table.update(hub)
    return parse_hub_config({"hub": table, "destinations": destinations or {}},
                            environ={"RELAY_HUB_SECRET": secret.decode()})
