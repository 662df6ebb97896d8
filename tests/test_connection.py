"""Connection manager, heartbeat watchdog and backpressure."""

from __future__ import annotations

import time
from pathlib import Path

import trio
import trio.testing
from purerpc.grpclib.exceptions import RpcFailedError
from purerpc.grpclib.status import Status, StatusCode

from relayd.edge.connection import HubConnection
from relayd.edge.daemon import Relayd
from relayd.edge.dispatcher import Dispatcher
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import AckRecord, NewWebhook, Store
from relayd.wire import pb
from tests.conftest import start_edge
from tests.helpers import TestHub, make_config, post, socket_inodes, wait_for

ABORTED = 10
UNAVAILABLE = 14


async def test_newer_connection_replaces_current_and_requeues_in_flight(edge: Relayd) -> None:
    a1 = (await post(edge.addresses.ingress, "alpha", b"a1")).json()["id"]
    a2 = (await post(edge.addresses.ingress, "alpha", b"a2")).json()["id"]
    b1 = (await post(edge.addresses.ingress, "beta", b"b1")).json()["id"]
    before = socket_inodes()
    async with TestHub.connected(edge.addresses.grpc) as old:
        assert {(await old.recv_webhook()).id for _ in range(2)} == {a1, b1}
        old_conn = edge.manager.current
        assert old_conn is not None and old_conn.in_flight_count() == 2
        assert len(socket_inodes() - before) == 2  # client and server side of the old hub
        async with TestHub.connected(edge.addresses.grpc) as new:
            assert edge.manager.current is not old_conn
            # the old stream is over, with a status, and the edge closed its socket (no
            # other stream used it)
            with trio.fail_after(3):
                assert await old.wait_end() == ABORTED
            assert old.stream.end_stream_event.status.status_message == \
                "replaced by a newer connection"
            await wait_for(lambda: len(socket_inodes() - before) == 3)  # old client + new pair
            assert old_conn.close_reason == "replaced by a newer connection"
            got = [await new.recv_webhook() for _ in range(2)]
            assert {w.id for w in got} == {a1, b1}
            assert all(w.attempt == 1 for w in got)
            await new.ack(a1)
            assert (await new.recv_webhook()).id == a2  # order kept after the requeue


async def test_stale_connection_closed_socket_gone_and_in_flight_requeued(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, heartbeat_interval=0.1, stale_timeout=0.5)
    wid = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    before = socket_inodes()
    async with TestHub.connected(edge.addresses.grpc) as silent:
        conn = edge.manager.current
        assert (await silent.recv_webhook()).id == wid
        assert len(socket_inodes() - before) == 2
        # the hub reads but never writes: the edge gives up on it (when exactly: see
        # test_silent_hub_is_closed_exactly_stale_timeout_after_it_connected)
        await wait_for(lambda: not edge.manager.is_connected())
        assert conn is not None and conn.close_reason.startswith("stale:")
        with trio.fail_after(3):
            assert await silent.wait_end() == UNAVAILABLE
        await wait_for(lambda: len(socket_inodes() - before) == 1)  # only our client side left
        assert edge.manager.statistics().connected is False
    async with TestHub.connected(edge.addresses.grpc) as hub:
        webhook = await hub.recv_webhook()
        assert webhook.id == wid and webhook.attempt == 1


class _MemoryHub:
    """The hub end of a `HubConnection` in memory: stream and transport in one.

    The test sends with ``to_edge``; ``sent`` is what the edge sent, with the time;
    ``ended_at`` and ``status`` say when and how the edge ended the stream.
    """

    peer = "memory"

    def __init__(self) -> None:
        self.to_edge, self._from_hub = trio.open_memory_channel[pb.StreamRequest](10)
        self.sent: list[tuple[float, str]] = []
        self.ended_at: float | None = None
        self.status: Status | None = None
        self.closes_connection = False

    async def send_messages(self, messages: list[bytes]) -> None:
        for m in messages:
            kind = pb.StreamResponse.FromString(m).WhichOneof("message")
            self.sent.append((trio.current_time(), str(kind)))

    async def receive_messages(self, max_items: int) -> tuple[list[pb.StreamRequest], bool]:
        return [await self._from_hub.receive()], False

    def close_connection_when_done(self) -> None:
        self.closes_connection = True

    async def serve(self, *, heartbeat_interval: float, stale_timeout: float,
                    hub_heartbeats_at: tuple[float, ...] = ()) -> HubConnection:
        """Run a connection until the edge ends it; the hub sends heartbeats at the times."""
        ack_send, _ = trio.open_memory_channel[AckRecord](10)
        conn = HubConnection(hub_id="home", endpoint_ids=None, capabilities=frozenset(),
                             stream=self, transport=self, ack_sink=ack_send, buffer_size=10,
                             heartbeat_interval=heartbeat_interval, stale_timeout=stale_timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run, conn)
            for t in hub_heartbeats_at:
                await trio.sleep_until(t)
                await self.to_edge.send(pb.StreamRequest(heartbeat=pb.Heartbeat()))
        return conn

    async def _run(self, conn: HubConnection) -> None:
        try:
            await conn.run()
        except RpcFailedError as exc:  # the status the hub is sent
            self.ended_at = trio.current_time()
            self.status = exc.status


async def test_silent_hub_is_closed_exactly_stale_timeout_after_it_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = _MemoryHub()
    conn = await hub.serve(heartbeat_interval=25, stale_timeout=60)
    assert hub.ended_at == 60.0
    assert conn.close_reason == "stale: no message from the hub within the stale timeout"
    assert hub.status is not None and hub.status.status_code == StatusCode.UNAVAILABLE
    assert hub.status.status_message == conn.close_reason
    assert hub.closes_connection  # unless the hub's next stream shares it
    assert hub.sent == [(25.0, "heartbeat"), (50.0, "heartbeat")]


async def test_each_hub_message_keeps_the_connection_for_another_stale_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = _MemoryHub()
    # the last only 3 s after the one before: a watchdog with slack used to skip such a touch
    conn = await hub.serve(heartbeat_interval=30, stale_timeout=60,
                           hub_heartbeats_at=(50.0, 100.0, 150.0, 200.0, 203.0))
    assert hub.ended_at == 263.0 and conn.close_reason.startswith("stale:")
    assert hub.sent == [(30.0 * i, "heartbeat") for i in range(1, 9)]  # 30 ... 240


class _BlockedStream:
    """A hub stream whose sends block until released, like a hub that stopped reading."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.sent: list[pb.StreamResponse] = []
        self.writes = 0

    async def send_messages(self, messages: list[bytes]) -> None:
        self.writes += 1
        await self.release.wait()
        self.sent += [pb.StreamResponse.FromString(m) for m in messages]

    async def receive_messages(self, max_items: int) -> None:
        await trio.sleep_forever()


class _Transport:
    peer = "test"

    def close_connection_when_done(self) -> None:
        raise AssertionError("not expected")


async def test_backpressure_buffer_of_two_never_drops(tmp_path: Path) -> None:
    config = make_config(tmp_path, buffer_size=2)
    async with Store.open(config.store.path) as store:
        await store.insert_webhooks([
            NewWebhook(f"w{i:03}", "alpha", "POST", [], b"x", time.time()) for i in range(100)
        ])
        manager = ConnectionManager()
        stream = _BlockedStream()
        ack_send, _ack_receive = trio.open_memory_channel(10)
        conn = HubConnection(hub_id="home", endpoint_ids=None, capabilities=frozenset(),
                             stream=stream, transport=_Transport(), ack_sink=ack_send,
                             buffer_size=config.relay.buffer_size, heartbeat_interval=60,
                             stale_timeout=120)
        # a window of 100 lets the dispatcher try to push all 100 at once
        dispatcher = Dispatcher(store, manager, config.endpoints, window=100,
                                pipeline_window=config.relay.pipeline_window,
                                poll_interval=config.relay.poll_interval)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            manager.attach(conn)
            await nursery.start(dispatcher.run)
            # one write held by the blocked sender, two in the buffer, the dispatcher waits:
            # a handful handed out, far from the 100 pending
            await wait_for(lambda: conn.buffered() == 2 and stream.writes == 1)
            assert conn.in_flight_count() <= 8  # buffer 2, the write batch and the waiting send
            assert dispatcher.rounds == 0  # still inside its first round, waiting
            counts = await store.counts()
            assert counts["pending"] == 100  # nothing dropped, nothing marked
            stream.release.set()
            await wait_for(lambda: len(stream.sent) == 100)
            assert [m.webhook.id for m in stream.sent] == [f"w{i:03}" for i in range(100)]
            nursery.cancel_scope.cancel()
