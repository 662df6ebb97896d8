"""Logs that scale: nothing per delivered webhook at INFO, a summary per endpoint instead."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from relayd.common.tally import SUMMARY_SECONDS
from relayd.edge.activity import Activity
from relayd.edge.daemon import Addresses, Relayd
from relayd.edge.store import AckOutcome, NewWebhook
from relayd.hub.daemon import RelayHub
from tests.destination import Destination
from tests.helpers import TestHub, make_config, make_hub_config, post, wait_for

NOW = 1_000_000.0


class _LogTimes(logging.Handler):
    """Records ``(trio time, message)`` of each summary line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("summary of the last"):
            self.lines.append((trio.current_time(), record.getMessage()))


@pytest.fixture
def summaries() -> Iterator[list[tuple[float, str]]]:
    handler = _LogTimes()
    logger = logging.getLogger("relayd")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.setLevel(old_level)
        logger.removeHandler(handler)


def stored(*endpoints: str) -> list[NewWebhook]:
    return [NewWebhook(f"w{i}", ep, "POST", [], b"", NOW) for i, ep in enumerate(endpoints)]


def line(seconds: int, endpoint: str, received: int = 0, delivered: int = 0,
         transient: int = 0, permanent: int = 0, dead: int = 0) -> str:
    return (f"summary of the last {seconds}s endpoint={endpoint} received={received} "
            f"delivered={delivered} failed_transient={transient} failed_permanent={permanent} "
            f"dead_lettered={dead}")


async def test_summary_per_endpoint_every_interval_only_when_something_happened(
    autojump_clock: trio.testing.MockClock, summaries: list[tuple[float, str]]
) -> None:
    activity = Activity(clock=lambda: NOW)
    async with trio.open_nursery() as nursery:
        await nursery.start(activity.run)
        activity.webhooks_stored(stored("alpha", "alpha", "beta"))
        activity.acks_applied([
            AckOutcome("w0", "alpha", "delivered", received_at=NOW - 1),
            AckOutcome("w2", "beta", "retry", "busy", NOW + 1, NOW - 1),
            AckOutcome("w2", "beta", "skipped", received_at=NOW - 1),  # not an attempt
        ])
        await trio.sleep_until(SUMMARY_SECONDS * 2.5)  # the second interval was quiet
        activity.acks_applied([AckOutcome("w1", "alpha", "dead_letter", "busy",
                                          received_at=NOW - 1),
                               AckOutcome("w3", "beta", "failed", "gone", received_at=NOW - 1)])
        await trio.sleep_until(SUMMARY_SECONDS * 3 + 10)
        activity.webhooks_stored(stored("gamma"))
        nursery.cancel_scope.cancel()  # the stop logs what is left
    assert summaries == [
        (60.0, line(60, "alpha", received=2, delivered=1)),
        (60.0, line(60, "beta", received=1, transient=1)),
        (180.0, line(60, "alpha", transient=1, dead=1)),
        (180.0, line(60, "beta", permanent=1)),
        (190.0, line(10, "gamma", received=1)),
    ]


async def test_a_delivered_webhook_logs_nothing_at_info_a_failed_attempt_does(
    edge: Relayd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relayd")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        delivered = (await post(edge.addresses.ingress, "alpha")).json()["id"]
        assert (await hub.recv_webhook()).id == delivered
        await hub.ack(delivered)
        failed = (await post(edge.addresses.ingress, "alpha")).json()["id"]
        assert (await hub.recv_webhook()).id == failed
        await hub.ack(failed, success=False, status_code=503, error="busy")
        await wait_for(lambda: edge.ack_writer.applied == 2)

    def about(webhook_id: str) -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records
                if f"webhook_id={webhook_id}" in r.getMessage()]

    # received, sent and delivered, at DEBUG only
    assert {level for level, _ in about(delivered)} == {logging.DEBUG}
    assert any(m.startswith("webhook received") for _, m in about(delivered))
    assert any(m.startswith("webhook delivered") for _, m in about(delivered))
    assert (logging.INFO, "webhook delivery failed, will retry") in [
        (level, m.split(" webhook_id")[0]) for level, m in about(failed)]


async def test_edge_logs_what_its_summary_had_not_when_it_stops(
    nursery: trio.Nursery, tmp_path: Path, summaries: list[tuple[float, str]]
) -> None:
    daemon = Relayd(make_config(tmp_path))
    done = trio.Event()

    async def run(*, task_status: trio.TaskStatus[Addresses]) -> None:
        await daemon.run(task_status=task_status)
        done.set()

    addresses = await nursery.start(run)
    for endpoint in ("alpha", "alpha", "beta"):
        await post(addresses.ingress, endpoint)
    daemon.request_shutdown()
    with trio.fail_after(10):
        await done.wait()
    # (the seconds since the start vary; what was counted does not)
    assert [message.split(" endpoint=")[1] for _, message in summaries] == [
        line(0, "alpha", received=2).split(" endpoint=")[1],
        line(0, "beta", received=1).split(" endpoint=")[1],
    ]


async def test_hub_logs_a_delivery_only_at_debug_and_counts_it_in_its_summary(
    edge: Relayd, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relayd")
    destination = Destination()
    await nursery.start(destination.serve)
    relay_hub = RelayHub(make_hub_config(edge.addresses.grpc,
                                         {"alpha": destination.url("/alpha")}))
    await nursery.start(relay_hub.run)
    wid = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    await wait_for(lambda: edge.ack_writer.applied == 1)
    relay_hub.request_shutdown()
    with trio.fail_after(10):
        await relay_hub.stopped.wait()
    assert not [r for r in caplog.records if wid in r.getMessage()]
    hub_summaries = [r.getMessage() for r in caplog.records
                     if r.name == "relayd.hub.session" and r.getMessage().startswith("summary")]
    assert len(hub_summaries) == 1
    assert hub_summaries[0].endswith(
        "endpoint=alpha delivered=1 failed_transient=0 failed_permanent=0 duplicate=0")
