"""Prometheus metrics of one daemon (served at ``GET /metrics``).

Each :class:`Metrics` owns its own registry, so several daemons (or tests) in one process never
share counters.  Events the bridge sees once (a DM received, a reply delivered) are counters
incremented where they happen; numbers other components already keep (queue counters, gateway
reconnects and resumes, Discord rate-limit waits) are read at scrape time from the objects
handed to :meth:`Metrics.observe`, so there is a single source of truth for each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from diswoot.bridge.jobs import QueueCounters
from diswoot.gateway.events import GatewayStatus
from diswoot.rest.gate import RestStats
from diswoot.store.checkpoint import CheckpointStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

Reader = Callable[[], dict[tuple[str, ...], float]]


class ObservedQueue(Protocol):
    """What :meth:`Metrics.observe` reads from a job queue (``diswoot.bridge.jobs.JobQueue``)."""

    name: str
    counters: QueueCounters

    @property
    def depth(self) -> int: ...


class _ScrapeTime(Collector):
    """Metric families whose values are read from live objects at each scrape."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, str, list[str], Reader]] = {}

    def add(self, kind: str, name: str, doc: str, labels: list[str], read: Reader) -> None:
        self.sources[name] = (kind, doc, labels, read)

    def collect(self) -> Iterator[Metric]:
        for name, (kind, doc, labels, read) in self.sources.items():
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
            else:
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
        self.webhooks = Counter(
            "diswoot_webhooks_total", "Chatwoot webhook requests by outcome", ["outcome"],
            registry=r,
        )
        self.interactions = Counter(
            "diswoot_interactions_total", "Discord interactions handled", ["kind"], registry=r
        )
        self.recovered = Counter(
            "diswoot_recovered_total", "Messages recovered by backfill or reconciliation",
            ["source"], registry=r,
        )
        self.events_rejected = Counter(
            "diswoot_events_rejected_total",
            "Gateway events skipped: malformed, undecodable, or failed in their handler",
            ["type", "reason"], registry=r,
        )
        self.dm_store_retries = Counter(
            "diswoot_dm_store_retries_total",
            "Times received DMs, edits or deletions could not be stored (disk, I/O, lock) and "
            "were tried again",
            registry=r,
        )
        self.jobs_pruned = Counter(
            "diswoot_jobs_pruned_total",
            "Done jobs deleted after the retention period (see diswoot/bridge/retention.py)",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "diswoot_delivery_latency_seconds", "Time from receipt to delivery", ["direction"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.chatwoot_up = Gauge(
            "diswoot_chatwoot_up", "1 when the last Chatwoot probe succeeded", registry=r
        )
        self._live = _ScrapeTime()
        r.register(self._live)

    def gauge_from(self, name: str, doc: str, labels: list[str], read: Reader) -> None:
        """Expose a gauge whose values are read at scrape time."""
        self._live.add("gauge", name, doc, labels, read)

    def counter_from(self, name: str, doc: str, labels: list[str], read: Reader) -> None:
        """Expose a counter (``name`` ends in ``_total``) whose values are read at scrape time."""
        self._live.add("counter", name, doc, labels, read)

    def observe(
        self,
        *,
        gateway: GatewayStatus,
        rest: RestStats,
        queues: Sequence[ObservedQueue],
        store_batches: Callable[[], int] = lambda: 0,
        checkpoints: CheckpointStats | None = None,
    ) -> None:
        """Export the gateway's, the Discord client's, the queues' and the store's counters."""

        def one(value: Callable[[], float]) -> Reader:
            return lambda: {(): float(value())}

        def per_queue(value: Callable[[ObservedQueue], float]) -> Reader:
            return lambda: {(queue.name,): float(value(queue)) for queue in queues}

        def failures() -> dict[tuple[str, ...], float]:
            return {
                (queue.name, kind): float(count)
                for queue in queues
                for kind, count in sorted(queue.counters.failures_by_kind.items())
            }

        self.gauge_from("diswoot_gateway_ready", "1 while the gateway session is ready", [],
                        one(lambda: gateway.state == "ready"))
        self.counter_from("diswoot_gateway_connects_total", "Gateway connections opened", [],
                          one(lambda: gateway.connects))
        self.counter_from("diswoot_gateway_reconnects_total", "Gateway reconnects", [],
                          one(lambda: gateway.reconnects))
        self.counter_from("diswoot_gateway_resumes_total", "Gateway sessions resumed", [],
                          one(lambda: gateway.resumes))
        self.counter_from("diswoot_discord_requests_total", "Discord REST requests sent", [],
                          one(lambda: rest.requests))
        self.counter_from("diswoot_discord_rate_limit_waits_total",
                          "Discord REST requests that waited for a rate limit", [],
                          one(lambda: rest.rate_limit_waits))
        self.counter_from("diswoot_discord_rate_limit_wait_seconds_total",
                          "Seconds spent waiting for Discord rate limits", [],
                          one(lambda: rest.rate_limit_wait_seconds))
        self.counter_from("diswoot_discord_429_total", "Discord 429 responses", [],
                          one(lambda: rest.responses_429))
        self.gauge_from("diswoot_queue_depth", "Pending jobs per queue", ["queue"],
                        per_queue(lambda queue: queue.depth))
        self.counter_from("diswoot_retries_total", "Job attempts that will be retried",
                          ["queue"], per_queue(lambda queue: queue.counters.retries))
        self.counter_from("diswoot_dead_letters_total", "Jobs dead-lettered", ["queue"],
                          per_queue(lambda queue: queue.counters.dead))
        self.counter_from("diswoot_queue_store_retries_total",
                          "Times a queue's bookkeeping (a job's end, retry or dead letter) could "
                          "not be stored (disk, I/O, lock) and was tried again", ["queue"],
                          per_queue(lambda queue: queue.counters.store_retries))
        self.counter_from("diswoot_failures_total", "Failed job attempts by queue and kind",
                          ["queue", "kind"], failures)
        self.counter_from("diswoot_store_batches_total",
                          "Store hand-overs to the worker thread (one transaction each)", [],
                          one(store_batches))
        wal = CheckpointStats() if checkpoints is None else checkpoints
        self.counter_from("diswoot_store_checkpoints_total",
                          "WAL checkpoints run beside the store", [], one(lambda: wal.runs))
        self.gauge_from("diswoot_store_wal_frames",
                        "Frames in the write-ahead log at the last checkpoint", [],
                        one(lambda: wal.log_frames))
        self.gauge_from("diswoot_store_checkpoint_failing",
                        "1 while WAL checkpoints fail (the log grows until one works)", [],
                        one(lambda: wal.failing))

    def render(self) -> bytes:
        return generate_latest(self.registry)
