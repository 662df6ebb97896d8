"""``GET /metrics``: the relay in Prometheus text format (prometheus-client's exposition).

Counters (since the process started, from `relayd.edge.activity`):
``relayd_webhooks_received_total{endpoint}`` (committed at ingress),
``relayd_webhooks_delivered_total{endpoint}``,
``relayd_delivery_failures_total{endpoint,kind}`` (``kind``: ``transient``, sent again
later or dead-lettered past the maximum age, or ``permanent``),
``relayd_ingress_requests_total{code}`` (ingress answers by status code),
``relayd_ingress_rejected_total{endpoint,reason}`` (webhooks refused, 401, because their
sender was not verified: ``reason`` as in the answer) and the histogram
``relayd_delivery_latency_seconds`` (arrival to the ack written, retries included).

Gauges, read at scrape time: ``relayd_webhooks{status}`` (rows in the store per status;
``pending`` includes those in flight), ``relayd_webhooks_in_flight``,
``relayd_hub_connected`` (0 or 1) and ``relayd_oldest_pending_age_seconds`` (0 when
nothing is pending). The store's counts are kept by triggers, so a scrape costs the same
at any table size.

The format is prometheus-client's: Prometheus text 0.0.4, or OpenMetrics when the
scraper's ``Accept`` asks for it (as Prometheus does). Each daemon has its own
`CollectorRegistry`, not prometheus-client's global one, so that
several relayd in one process (the tests) keep their own numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from relayd.edge.admin.context import AdminContext
from relayd.edge.store import STATUSES

__all__ = ["METRICS_PATH", "RelaydCollector", "routes"]

METRICS_PATH = "/metrics"


class RelaydCollector:
    """Turns the daemon's counts into metric families when the registry collects.

    ``store_counts`` is what `Store.counts` returned for this scrape: the store is read
    off the event loop before rendering, and collecting itself never blocks.
    """

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx
        self.store_counts: Mapping[str, object] = {}

    def collect(self) -> Iterable[Metric]:
        yield from self._activity()
        yield from self._state()

    def _activity(self) -> Iterable[Metric]:
        activity = self._ctx.activity
        totals = activity.endpoints.totals()
        # every configured endpoint has its series from the start (at 0)
        endpoints = sorted({ep.id for ep in self._ctx.live_config().endpoints} | set(totals))
        received = CounterMetricFamily("relayd_webhooks_received_total",
                                       "Webhooks committed to the store at ingress",
                                       labels=["endpoint"])
        delivered = CounterMetricFamily("relayd_webhooks_delivered_total",
                                        "Webhooks acked as delivered by the hub",
                                        labels=["endpoint"])
        failures = CounterMetricFamily(
            "relayd_delivery_failures_total",
            "Failed delivery attempts: transient (sent again later, or dead-lettered past "
            "the maximum age) or permanent",
            labels=["endpoint", "kind"])
        for endpoint in endpoints:
            counts = totals.get(endpoint, {})
            received.add_metric([endpoint], counts.get("received", 0))
            delivered.add_metric([endpoint], counts.get("delivered", 0))
            failures.add_metric([endpoint, "transient"], counts.get("failed_transient", 0))
            failures.add_metric([endpoint, "permanent"], counts.get("failed_permanent", 0))
        yield from (received, delivered, failures)

        requests = CounterMetricFamily("relayd_ingress_requests_total",
                                       "Ingress responses by HTTP status code", labels=["code"])
        for code, n in sorted(activity.ingress_responses.items()):
            requests.add_metric([str(code)], n)
        yield requests
        rejected = CounterMetricFamily(
            "relayd_ingress_rejected_total",
            "Webhooks refused (401, not stored) because their sender was not verified",
            labels=["endpoint", "reason"])
        for (endpoint, reason), n in sorted(activity.ingress_rejected.items()):
            rejected.add_metric([endpoint, reason], n)
        yield rejected

        latency = activity.delivery_latency
        yield HistogramMetricFamily(
            "relayd_delivery_latency_seconds",
            "Time from a webhook's arrival to its delivered ack being written",
            buckets=[("+Inf" if bound == float("inf") else repr(bound), n)
                     for bound, n in latency.cumulative()],
            sum_value=latency.sum)

    def _state(self) -> Iterable[Metric]:
        counts = self.store_counts
        rows = GaugeMetricFamily("relayd_webhooks",
                                 "Webhooks in the store by status (pending includes in flight)",
                                 labels=["status"])
        for status in STATUSES:
            rows.add_metric([status], float(counts.get(status, 0)))  # type: ignore[arg-type]
        yield rows
        stats = self._ctx.manager.statistics()
        yield GaugeMetricFamily("relayd_webhooks_in_flight",
                                "Webhooks sent to the hub and not yet acked",
                                value=stats.in_flight)
        yield GaugeMetricFamily("relayd_hub_connected", "1 while a hub is connected",
                                value=1 if stats.connected else 0)
        oldest = counts.get("oldest_pending_received_at")
        age = 0.0 if oldest is None else max(self._ctx.clock() - float(oldest), 0.0)  # type: ignore[arg-type]
        yield GaugeMetricFamily("relayd_oldest_pending_age_seconds",
                                "Age of the oldest pending webhook (0 when none is pending)",
                                value=age)


def routes(ctx: AdminContext) -> list[BaseRoute]:
    registry = CollectorRegistry()
    collector = RelaydCollector(ctx)
    registry.register(collector)

    async def get_metrics(request: Request) -> Response:
        # the Prometheus text format, or OpenMetrics when the scraper asks for it
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        collector.store_counts = await ctx.store.counts()
        # (no await between the read and the rendering: a concurrent scrape cannot mix in)
        return Response(encode(registry), headers={"content-type": content_type})

    return [Route(METRICS_PATH, get_metrics, methods=["GET"])]
