"""Acceptance criterion 1 (auth), over a real purerpc connection to the edge."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import pytest
import trio

from relayd.common.signing import sign
from relayd.edge.daemon import Relayd
from relayd.wire import pb
from tests.conftest import start_edge
from tests.helpers import HUB_ID, SECRET, TestHub, connect_request, wait_for

UNAUTHENTICATED = 16


async def test_hub_can_connect_with_valid_hmac(edge: Relayd) -> None:
    async with TestHub.open(edge.addresses.grpc) as hub:
        response = await hub.connect()
        assert response.success and response.error == ""
        assert edge.manager.is_connected()
        assert edge.manager.statistics().hub_id == HUB_ID


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"secret": b"wrong-secret"}, "invalid signature"),
        ({"signature": "00" * 32}, "invalid signature"),
        ({"signature": "not hex at all \u00e9"}, "invalid signature"),
        ({"skew": -302}, "timestamp outside the allowed window"),
        ({"skew": +302}, "timestamp outside the allowed window"),
        ({"hub_id": "intruder"}, "unknown hub_id"),
    ],
    ids=["wrong-secret", "bad-signature", "garbage-signature", "expired", "future",
         "unknown-hub"],
)
async def test_invalid_connect_rejected_with_unauthenticated(
    edge: Relayd, kwargs: dict[str, object], reason: str
) -> None:
    if "skew" in kwargs:  # relative to now, computed when the test runs
        kwargs = {"timestamp": int(time.time()) + int(kwargs["skew"])}  # type: ignore[call-overload]
    async with TestHub.open(edge.addresses.grpc) as hub:
        response = await hub.connect(**kwargs)
        assert not response.success
        assert response.error == reason
        assert await hub.wait_end() == UNAUTHENTICATED
    assert not edge.manager.is_connected()


async def test_timestamp_at_the_window_edge_is_accepted(edge: Relayd) -> None:
    async with TestHub.open(edge.addresses.grpc) as hub:
        # 299 s old: inside the ±300 s window even if a second ticks during the test
        assert (await hub.connect(timestamp=int(time.time()) - 299)).success


async def test_replayed_connect_request_rejected(edge: Relayd) -> None:
    ts = int(time.time())
    async with TestHub.open(edge.addresses.grpc) as first:
        assert (await first.connect(timestamp=ts)).success
        async with TestHub.open(edge.addresses.grpc) as replay:
            response = await replay.connect(timestamp=ts)
            assert not response.success
            assert response.error == "replayed connect request"
            assert await replay.wait_end() == UNAUTHENTICATED


async def test_first_message_not_connect_rejected(edge: Relayd) -> None:
    async with TestHub.open(edge.addresses.grpc) as hub:
        await hub.heartbeat()
        message = await hub.recv()
        assert message is not None
        assert message.connect_response.success is False
        assert message.connect_response.error == "first message must be a ConnectRequest"
        assert await hub.wait_end() == UNAUTHENTICATED


async def test_no_connect_request_within_timeout_rejected(nursery: trio.Nursery,
                                                         tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, connect_timeout=0.3)
    async with TestHub.open(edge.addresses.grpc) as hub:
        with trio.fail_after(3):
            message = await hub.recv()
        assert message is not None
        assert message.connect_response.error == "no ConnectRequest within the connect timeout"
        assert await hub.wait_end() == UNAUTHENTICATED


async def test_bad_attempt_does_not_disturb_connected_hub(edge: Relayd) -> None:
    async with TestHub.connected(edge.addresses.grpc) as good:
        before = edge.manager.current
        async with TestHub.open(edge.addresses.grpc) as bad:
            assert not (await bad.connect(secret=b"nope")).success
            assert await bad.wait_end() == UNAUTHENTICATED
        assert edge.manager.current is before
        # the good hub still works: it gets a webhook and its ack lands
        from tests.helpers import post

        response = await post(edge.addresses.ingress, "alpha", b"still here")
        webhook = await good.recv_webhook()
        assert webhook.id == response.json()["id"]


async def test_secret_never_appears_in_logs(edge: Relayd,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with TestHub.connected(edge.addresses.grpc):
        pass
    async with TestHub.open(edge.addresses.grpc) as hub:
        await hub.connect(signature=sign(SECRET, "other", 1))
    assert caplog.records, "expected log lines to check"
    assert SECRET.decode() not in caplog.text
    assert "hub authentication failed" in caplog.text


def test_connect_request_helper_signs_hub_and_timestamp() -> None:
    message = connect_request(timestamp=1700000000)
    assert isinstance(message, pb.StreamRequest)
    assert message.connect.signature == sign(SECRET, HUB_ID, 1700000000)


async def test_unauthenticated_tcp_connection_is_closed(nursery: trio.Nursery,
                                                        tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, connect_timeout=0.2)
    # before connecting: the edge's deadline (2 x connect_timeout) starts at its accept, which
    # a loaded machine can run before this task resumes from the connect
    started = trio.current_time()
    sock = await trio.open_tcp_stream(edge.addresses.grpc.host, edge.addresses.grpc.port)
    async with sock:
        with trio.fail_after(3):
            # purerpc sends its SETTINGS frame first; then the edge closes the idle socket
            with contextlib.suppress(trio.BrokenResourceError):  # closed with a reset
                while await sock.receive_some(65536):
                    pass
        assert trio.current_time() - started >= 0.4
    await wait_for(lambda: not edge.grpc_server.connections)
