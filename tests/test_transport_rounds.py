"""The hub stream's cost per message when messages come one at a time.

On the live path a webhook crosses the stream alone: one envelope edge -> hub, one ack
back. Each scheduler round (a task woken and stepped) costs far more here than the
Python around it (shared/notes/stack.md), so the transport's rounds per message are
pinned: a real relayd gRPC listener and a real relay-hub client on loopback, messages
echoed one at a time, task steps counted with a trio instrument.
"""

from __future__ import annotations

import trio
import trio.abc
from purerpc.grpc_proto import GRPCProtoStream

from relayd.common.tomlconfig import ListenAddress
from relayd.transport.client import open_relay_stream
from relayd.transport.guard import PeerGuard
from relayd.transport.server import GrpcServer, RpcStream
from relayd.transport.stream import BatchStream
from relayd.wire import pb

ROUNDS = 50
# Task steps per echo round (client send, server receive and reply, client receive), both
# sides in this one process: each side's receive loop, reader and writer, and the test's
# task. Measured 8 per round with relayd's receive path and writer; 12.6 with purerpc's
# (a checkpoint per event, the writer woken by every flush, two rounds per anyio receive).
MAX_STEPS_PER_ROUND = 9


class StepCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


async def echo(stream: GRPCProtoStream, rpc: RpcStream) -> None:
    batch: BatchStream[pb.StreamRequest] = BatchStream(stream)
    rpc.authenticated()
    while True:
        messages, ended = await batch.receive_messages(10)
        if ended:
            return
        await batch.send_messages([pb.StreamResponse(heartbeat=pb.Heartbeat(
            timestamp=message.heartbeat.timestamp)) for message in messages])


async def test_a_message_at_a_time_costs_few_scheduler_rounds_per_message() -> None:
    guard = PeerGuard(max_connections=4, max_per_peer=4, failures_per_interval=10)
    server = GrpcServer(ListenAddress("127.0.0.1", 0), echo, unauthenticated_timeout=10,
                        idle_timeout=10, guard=guard)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.run)
            async with open_relay_stream(address.host, address.port,
                                         connect_timeout=5) as stream:
                async def round_trip(timestamp: int) -> None:
                    await stream.send_message(pb.StreamRequest(
                        heartbeat=pb.Heartbeat(timestamp=timestamp)))
                    replies: list[pb.StreamResponse] = []
                    while not replies:  # the response headers come first, alone
                        replies, _ = await stream.receive_messages(10)
                    assert [reply.heartbeat.timestamp for reply in replies] == [timestamp]

                await round_trip(0)  # connection and stream set up, not counted
                counter = StepCounter()
                trio.lowlevel.add_instrument(counter)
                try:
                    for timestamp in range(1, ROUNDS + 1):
                        await round_trip(timestamp)
                finally:
                    trio.lowlevel.remove_instrument(counter)
                await stream.close()
            nursery.cancel_scope.cancel()
    assert counter.steps / ROUNDS <= MAX_STEPS_PER_ROUND, counter.steps / ROUNDS
