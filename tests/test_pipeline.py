"""The "ordered-pipeline" capability: many in flight per endpoint, order still kept."""

from __future__ import annotations

from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayd.edge.daemon import Relayd
from relayd.hub.daemon import RelayHub
from relayd.wire import ORDERED_PIPELINE, SKIPPED_ERROR
from tests.conftest import start_edge
from tests.destination import Destination
from tests.helpers import TestHub, make_config, make_hub_config, post, wait_for


async def test_hub_without_capability_never_has_two_of_one_endpoint_in_flight(
    edge: Relayd,
) -> None:
    ids = [(await post(edge.addresses.ingress, "alpha", f"{i}".encode())).json()["id"]
           for i in range(20)]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        for expected in ids:
            webhook = await hub.recv_webhook()
            assert webhook.id == expected
            # nothing else of alpha comes while this one is unacked
            target = edge.dispatcher.rounds + 2
            await wait_for(lambda t=target: edge.dispatcher.rounds >= t)
            with trio.move_on_after(0):
                raise AssertionError(f"second in flight: {await hub.recv()}")
            assert edge.manager.statistics().in_flight == 1
            await hub.ack(webhook.id)


async def test_pipelining_hub_gets_up_to_the_window_in_flight(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, pipeline_window=8)
    ids = [(await post(edge.addresses.ingress, "alpha", f"{i}".encode())).json()["id"]
           for i in range(20)]
    async with TestHub.connected(edge.addresses.grpc, capabilities=[ORDERED_PIPELINE]) as hub:
        got = [(await hub.recv_webhook()).id for _ in range(8)]
        assert got == ids[:8]
        assert edge.manager.statistics().in_flight == 8
        rounds = edge.dispatcher.rounds
        await wait_for(lambda: edge.dispatcher.rounds >= rounds + 2)
        with trio.move_on_after(0):
            raise AssertionError(f"more than the window: {await hub.recv()}")
        await hub.ack(ids[0])
        assert (await hub.recv_webhook()).id == ids[8]


async def test_transient_failure_rewinds_and_skips_are_not_attempts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    edge = await start_edge(nursery, tmp_path, pipeline_window=4, retry_initial=0.05)
    ids = [(await post(edge.addresses.ingress, "alpha", f"{i}".encode())).json()["id"]
           for i in range(4)]
    async with TestHub.connected(edge.addresses.grpc, capabilities=[ORDERED_PIPELINE]) as hub:
        assert [(await hub.recv_webhook()).id for _ in range(4)] == ids
        await hub.ack(ids[0])
        await hub.ack(ids[1], success=False, status_code=503, error="busy")
        for later in ids[2:]:
            await hub.ack(later, success=False, status_code=0, error=SKIPPED_ERROR)
        # after ids[1]'s backoff the edge resumes from it, in order
        again = [await hub.recv_webhook() for _ in range(3)]
        assert [(w.id, w.attempt) for w in again] == [(ids[1], 2), (ids[2], 1), (ids[3], 1)]
    rows = [await edge.store.get(i) for i in ids]
    assert [r["attempts"] for r in rows] == [1, 1, 0, 0]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(failures=st.lists(st.booleans(), min_size=1, max_size=60),
       counts=st.tuples(st.integers(1, 40), st.integers(0, 40)))
async def test_order_per_endpoint_holds_under_random_transient_failures(
    tmp_path_factory: object, failures: list[bool], counts: tuple[int, int]
) -> None:
    """relayd (window 256) + relay-hub + a destination answering 503 at random."""
    tmp_path = tmp_path_factory.mktemp("pipe")  # type: ignore[attr-defined]
    destination = Destination()
    script = iter(failures)
    async with trio.open_nursery() as nursery:
        await nursery.start(destination.serve)
        destination.decide = lambda path: 503 if next(script, False) else 200
        edge = Relayd(make_config(tmp_path, pipeline_window=256, retry_initial=0.01,
                                  retry_max=0.02, poll_interval=0.05))
        await nursery.start(edge.run)
        sent = {"alpha": [], "beta": []}
        for endpoint, count in zip(("alpha", "beta"), counts, strict=True):
            for i in range(count):
                body = f"{endpoint}-{i}".encode()
                await post(edge.addresses.ingress, endpoint, body)
                sent[endpoint].append(body)
        hub = RelayHub(make_hub_config(edge.addresses.grpc, {
            "alpha": destination.url("/alpha"), "beta": destination.url("/beta")}))
        await nursery.start(hub.run)
        total = sum(counts)
        await destination.wait_count(
            lambda d: len(d.bodies("/alpha")) + len(d.bodies("/beta")) >= total, within=20)
        # successes free their slots on arrival; the ack writer records them after
        async def all_recorded() -> bool:
            return (await edge.store.counts())["delivered"] >= total
        await wait_for(all_recorded)
        for endpoint in ("alpha", "beta"):
            assert destination.bodies(f"/{endpoint}") == sent[endpoint]
        counts_now = await edge.store.counts()
        assert counts_now["delivered"] == total and counts_now["pending"] == 0
        nursery.cancel_scope.cancel()
