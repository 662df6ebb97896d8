"""GET /metrics on the admin listener: Prometheus samples that follow what the relay does."""

from __future__ import annotations

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from relayd.edge.daemon import Relayd
from tests.conftest import start_edge
from tests.helpers import TestHub, post, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(edge: Relayd) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{edge.addresses.admin}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_follow_webhooks_received_delivered_and_failed(edge: Relayd) -> None:
    before = await scrape(edge)
    for endpoint in ("alpha", "beta", "gamma"):  # every configured endpoint, from the start
        assert value(before, "relayd_webhooks_received_total", endpoint=endpoint) == 0
    assert value(before, "relayd_hub_connected") == 0
    assert value(before, "relayd_webhooks", status="pending") == 0
    assert value(before, "relayd_oldest_pending_age_seconds") == 0
    assert value(before, "relayd_delivery_latency_seconds_count") == 0

    for endpoint in ("alpha", "alpha", "beta"):
        assert (await post(edge.addresses.ingress, endpoint)).status_code == 202
    assert (await post(edge.addresses.ingress, "nope")).status_code == 404
    received = await scrape(edge)
    assert value(received, "relayd_webhooks_received_total", endpoint="alpha") == 2
    assert value(received, "relayd_webhooks_received_total", endpoint="beta") == 1
    assert value(received, "relayd_ingress_requests_total", code="202") == 3
    assert value(received, "relayd_ingress_requests_total", code="404") == 1
    assert value(received, "relayd_webhooks", status="pending") == 3
    assert value(received, "relayd_oldest_pending_age_seconds") > 0

    async with TestHub.connected(edge.addresses.grpc) as hub:
        first = {w.endpoint_id: w for w in [await hub.recv_webhook(), await hub.recv_webhook()]}
        await hub.ack(first["alpha"].id)
        await hub.ack(first["beta"].id, success=False, status_code=410, error="gone",
                      permanent=True)
        await wait_for(lambda: edge.ack_writer.applied == 2)
        second = await hub.recv_webhook()
        assert second.endpoint_id == "alpha"
        connected = await scrape(edge)
        assert value(connected, "relayd_hub_connected") == 1
        assert value(connected, "relayd_webhooks_in_flight") == 1
        await hub.ack(second.id, success=False, status_code=503, error="busy")
        await wait_for(lambda: edge.ack_writer.applied == 3)
        after = await scrape(edge)

    assert value(after, "relayd_webhooks_delivered_total", endpoint="alpha") == 1
    assert value(after, "relayd_webhooks_delivered_total", endpoint="beta") == 0
    assert value(after, "relayd_delivery_failures_total", endpoint="beta", kind="permanent") == 1
    assert value(after, "relayd_delivery_failures_total", endpoint="alpha", kind="transient") == 1
    assert value(after, "relayd_delivery_failures_total", endpoint="alpha", kind="permanent") == 0
    assert value(after, "relayd_webhooks", status="delivered") == 1
    assert value(after, "relayd_webhooks", status="failed") == 1
    assert value(after, "relayd_webhooks", status="pending") == 1
    # one delivery, its latency counted in every bucket at or above it
    assert value(after, "relayd_delivery_latency_seconds_count") == 1
    assert value(after, "relayd_delivery_latency_seconds_bucket", le="+Inf") == 1
    assert 0 < value(after, "relayd_delivery_latency_seconds_sum") < 60
    assert value(after, "relayd_delivery_latency_seconds_bucket", le="60.0") == 1


async def test_two_daemons_in_one_process_keep_their_own_counts(
    edge: Relayd, nursery: trio.Nursery, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = await start_edge(nursery, tmp_path_factory.mktemp("other"))
    await post(edge.addresses.ingress, "alpha")
    assert value(await scrape(edge), "relayd_webhooks_received_total", endpoint="alpha") == 1
    assert value(await scrape(other), "relayd_webhooks_received_total", endpoint="alpha") == 0
