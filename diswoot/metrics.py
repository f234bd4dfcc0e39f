"""Prometheus metrics of one daemon (served at ``GET /metrics``).

Each :class:`Metrics` owns its own registry, so several daemons (or tests) in one process never
share counters.  Gauges that mirror live state (queue depths, gateway state) are read at scrape
time through callbacks registered with :meth:`Metrics.gauge_from`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _CallbackGauges(Collector):
    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, list[str], Callable[[], dict[tuple[str, ...], float]]]]
        self.sources = {}

    def collect(self):  # type: ignore[no-untyped-def]
        for name, (doc, labels, read) in self.sources.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for label_values, value in read().items():
                family.add_metric(list(label_values), value)
            yield family


class Metrics:
    """All counters, gauges and histograms of the bridge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.dms_received = Counter(
            "diswoot_dms_received_total", "Discord DMs received and stored", registry=r
        )
        self.dms_forwarded = Counter(
            "diswoot_dms_forwarded_total", "DMs delivered to Chatwoot", registry=r
        )
        self.replies_delivered = Counter(
            "diswoot_replies_delivered_total", "Agent replies delivered as Discord DMs", registry=r
        )
        self.notices_sent = Counter(
            "diswoot_notices_sent_total", "Status notices and prompts sent to users", ["kind"],
            registry=r,
        )
        self.failures = Counter(
            "diswoot_failures_total", "Failed attempts by queue and kind", ["queue", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "diswoot_retries_total", "Job attempts that will be retried", ["queue"], registry=r
        )
        self.dead_letters = Counter(
            "diswoot_dead_letters_total", "Jobs dead-lettered", ["queue"], registry=r
        )
        self.webhooks = Counter(
            "diswoot_webhooks_total", "Chatwoot webhook requests by outcome", ["outcome"],
            registry=r,
        )
        self.interactions = Counter(
            "diswoot_interactions_total", "Discord interactions handled", ["kind"], registry=r
        )
        self.gateway_reconnects = Counter(
            "diswoot_gateway_reconnects_total", "Gateway reconnects", registry=r
        )
        self.gateway_resumes = Counter(
            "diswoot_gateway_resumes_total", "Gateway sessions resumed", registry=r
        )
        self.recovered = Counter(
            "diswoot_recovered_total", "Messages recovered by backfill or reconciliation",
            ["source"], registry=r,
        )
        self.delivery_latency = Histogram(
            "diswoot_delivery_latency_seconds", "Time from receipt to delivery", ["direction"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.chatwoot_up = Gauge(
            "diswoot_chatwoot_up", "1 when the last Chatwoot probe succeeded", registry=r
        )
        self._callbacks = _CallbackGauges()
        r.register(self._callbacks)

    def gauge_from(
        self,
        name: str,
        doc: str,
        labels: list[str],
        read: Callable[[], dict[tuple[str, ...], float]],
    ) -> None:
        """Expose a gauge whose values are read at scrape time."""
        self._callbacks.sources[name] = (doc, labels, read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
