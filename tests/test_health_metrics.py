"""GET /health (readiness JSON, 200/503) and GET /metrics (Prometheus text) of a real daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from diswoot.bridge.chatwoot_probe import probe_once
from diswoot.bridge.jobs import QueueCounters
from diswoot.gateway.events import GatewayStatus
from diswoot.health import Health
from diswoot.metrics import CONTENT_TYPE, Metrics
from diswoot.rest.gate import RestStats
from diswoot.store.checkpoint import CheckpointStats
from diswoot.testing.harness import World, bridge_world

UID = "80351110224678912"
TIMEOUT = 30


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ---------------------------------------------------------------------------- units


def test_health_snapshot_readiness() -> None:
    gateway = GatewayStatus()
    health = Health(gateway=gateway, started_at=100.0)
    health.queue_depths = lambda: {
        "inbound": {"pending": 2, "dead": 0, "oldest_pending_age_seconds": 12.5},
        "outbound": {"pending": 1, "dead": 1, "oldest_pending_age_seconds": 40.0},
        "csat": {"pending": 0, "dead": 0, "oldest_pending_age_seconds": None},
    }
    ready, body = health.snapshot(now=160.0)
    assert not ready and body["status"] == "degraded" and body["live"] is True
    assert body["gateway"]["state"] == "stopped"
    assert body["oldest_pending_age_seconds"] == 40.0
    assert body["uptime_seconds"] == 60.0

    gateway.state, gateway.user_tag = "ready", "bot#1234"
    ready, body = health.snapshot(now=160.0)
    assert ready and body["status"] == "ok"  # not probed yet counts as reachable
    assert body["gateway"]["user"] == "bot#1234"

    changes: list[bool] = []
    health.on_change = lambda: changes.append(True)
    assert health.report_chatwoot_failure("timeout", now=170.0) is True
    assert health.report_chatwoot_failure("timeout again", now=171.0) is False  # not news
    assert changes == [True]
    ready, body = health.snapshot(now=172.0)
    assert not ready
    assert body["chatwoot"] == {"reachable": False, "checked_at": 171.0, "error": "timeout again"}

    health.chatwoot_reachable, health.stopping = True, True
    assert health.snapshot(now=172.0)[0] is False


@dataclass
class CountedQueue:
    name: str
    depth: int = 0
    counters: QueueCounters = field(default_factory=QueueCounters)


def test_metrics_read_live_counters_at_scrape_time() -> None:
    metrics = Metrics()
    gateway, rest = GatewayStatus(), RestStats()
    inbound, outbound = CountedQueue("inbound"), CountedQueue("outbound")
    checkpoints = CheckpointStats()
    metrics.observe(
        gateway=gateway, rest=rest, queues=[inbound, outbound], checkpoints=checkpoints
    )
    before = samples(metrics.render().decode())
    assert before[("diswoot_gateway_reconnects_total", ())] == 0
    assert before[("diswoot_store_checkpoint_failing", ())] == 0
    assert before[("diswoot_queue_depth", (("queue", "inbound"),))] == 0

    gateway.state, gateway.connects, gateway.reconnects, gateway.resumes = "ready", 3, 2, 1
    rest.requests, rest.rate_limit_waits, rest.rate_limit_wait_seconds = 40, 2, 1.5
    rest.responses_429 = 1
    inbound.depth = 4
    outbound.counters.retries = 3
    outbound.counters.dead = 1
    outbound.counters.failures_by_kind.update(transient=3, permanent=1)
    checkpoints.runs, checkpoints.log_frames, checkpoints.failing = 7, 120, True
    after = samples(metrics.render().decode())
    assert after[("diswoot_store_checkpoints_total", ())] == 7
    assert after[("diswoot_store_wal_frames", ())] == 120
    assert after[("diswoot_store_checkpoint_failing", ())] == 1
    assert after[("diswoot_gateway_ready", ())] == 1
    assert after[("diswoot_gateway_connects_total", ())] == 3
    assert after[("diswoot_gateway_reconnects_total", ())] == 2
    assert after[("diswoot_gateway_resumes_total", ())] == 1
    assert after[("diswoot_discord_requests_total", ())] == 40
    assert after[("diswoot_discord_rate_limit_waits_total", ())] == 2
    assert after[("diswoot_discord_rate_limit_wait_seconds_total", ())] == 1.5
    assert after[("diswoot_discord_429_total", ())] == 1
    assert after[("diswoot_queue_depth", (("queue", "inbound"),))] == 4
    assert after[("diswoot_retries_total", (("queue", "outbound"),))] == 3
    assert after[("diswoot_dead_letters_total", (("queue", "outbound"),))] == 1
    assert after[("diswoot_failures_total", (("kind", "permanent"), ("queue", "outbound")))] == 1
    assert after[("diswoot_failures_total", (("kind", "transient"), ("queue", "outbound")))] == 3


def test_each_metrics_registry_is_separate() -> None:
    one, two = Metrics(), Metrics()
    one.dms_received.inc()
    assert samples(one.render().decode())[("diswoot_dms_received_total", ())] == 1
    assert samples(two.render().decode())[("diswoot_dms_received_total", ())] == 0


# ---------------------------------------------------------------------------- the daemon


@asynccontextmanager
async def ready_world(tmp_path: Path) -> AsyncIterator[World]:
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path) as world:
            world.discord.add_user(UID, "alice")
            await world.wait_for(lambda: world.daemon.ctx.gateway.state == "ready")
            yield world


async def get_health(world: World) -> tuple[int, dict[str, Any]]:
    response = await world.http.get(world.base_url + "/health")
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


async def get_metrics(world: World) -> Samples:
    response = await world.http.get(world.base_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    return samples(response.text)


async def metrics_when(world: World, predicate: Callable[[Samples], bool]) -> Samples:
    """Scrape /metrics until ``predicate`` holds (the world's deadline bounds the wait)."""
    while True:
        current = await get_metrics(world)
        if predicate(current):
            return current
        await trio.sleep(0.02)


async def test_health_is_200_and_complete_when_ready(tmp_path: Path) -> None:
    async with ready_world(tmp_path) as world:
        await world.wait_for(lambda: world.daemon.ctx.health.chatwoot_reachable)
        status, body = await get_health(world)
        assert status == 200, body
        assert body["status"] == "ok" and body["ready"] is True and body["live"] is True
        assert body["gateway"]["state"] == "ready"
        assert body["gateway"]["user"] == "diswoot-bot"
        assert body["gateway"]["connects"] == 1
        assert body["chatwoot"]["reachable"] is True and body["chatwoot"]["error"] is None
        assert {"inbound", "outbound"} <= set(body["queues"])
        assert body["queues"]["inbound"] == {
            "pending": 0, "dead": 0, "oldest_pending_age_seconds": None
        }
        assert body["oldest_pending_age_seconds"] is None


async def test_health_is_503_while_chatwoot_is_down_and_shows_the_backlog(
    tmp_path: Path,
) -> None:
    async with ready_world(tmp_path) as world:
        ctx = world.daemon.ctx
        inbound = world.daemon.inbound.queue
        world.chatwoot.down = True
        assert await probe_once(ctx, [inbound]) is False
        status, body = await get_health(world)
        assert status == 503
        assert body["status"] == "degraded" and body["ready"] is False
        assert body["chatwoot"]["reachable"] is False and body["chatwoot"]["error"]
        assert body["gateway"]["state"] == "ready"  # live, just not ready

        world.discord.user_sends(UID, "is anyone there?")
        await world.wait_for(lambda: inbound.depth == 1)
        status, body = await get_health(world)
        assert status == 503
        assert body["queues"]["inbound"]["pending"] == 1
        assert body["oldest_pending_age_seconds"] is not None
        assert body["oldest_pending_age_seconds"] >= 0

        world.chatwoot.down = False
        assert await probe_once(ctx, [inbound]) is True  # wakes the queue at once
        queues = [inbound, world.daemon.outbound.queue, *world.daemon.outbound.extra_queues]
        # the DM, then its notices (greeting, "saved", reaction) drain from every queue
        await world.wait_for(lambda: all(queue.depth == 0 for queue in queues))
        status, body = await get_health(world)
        assert status == 200
        assert body["oldest_pending_age_seconds"] is None
        assert any(m["content"] == "is anyone there?" for m in world.chatwoot.messages.values())


async def test_metrics_move_when_a_dm_is_forwarded_and_a_reply_delivered(
    tmp_path: Path,
) -> None:
    async with ready_world(tmp_path) as world:
        before = await get_metrics(world)
        for name in ("diswoot_dms_received_total", "diswoot_dms_forwarded_total",
                     "diswoot_replies_delivered_total"):
            assert before[(name, ())] == 0
        assert before[("diswoot_queue_depth", (("queue", "inbound"),))] == 0

        world.discord.user_sends(UID, "my order is late")
        conversation = await world.wait_for(
            lambda: max(world.chatwoot.conversations, default=None)
        )
        await world.wait_for(lambda: world.chatwoot.messages_in(conversation))
        await world.chatwoot.agent_reply(conversation, "On it!")
        await world.wait_for(
            lambda: any(m.get("content") == "On it!" for m in world.discord.dm_messages(UID))
        )

        # the counters move right after the deliveries are recorded: wait for that moment
        after = await metrics_when(
            world, lambda m: m[("diswoot_replies_delivered_total", ())] >= 1
        )
        assert after[("diswoot_dms_received_total", ())] == 1
        assert after[("diswoot_dms_forwarded_total", ())] == 1
        assert after[("diswoot_replies_delivered_total", ())] == 1
        for direction in ("inbound", "outbound"):
            labels = (("direction", direction),)
            count = after[("diswoot_delivery_latency_seconds_count", labels)]
            assert count >= 1  # the DM inbound; the reply (and the greeting) outbound
            infinity = (*labels, ("le", "+Inf"))
            assert after[("diswoot_delivery_latency_seconds_bucket", infinity)] == count
        assert after[("diswoot_queue_depth", (("queue", "inbound"),))] == 0
        assert after[("diswoot_gateway_connects_total", ())] == 1
        assert after[("diswoot_gateway_reconnects_total", ())] == 0
        assert after[("diswoot_discord_requests_total", ())] >= 1
        assert ("diswoot_discord_rate_limit_waits_total", ()) in after
        assert ("diswoot_retries_total", (("queue", "inbound"),)) in after
        assert after[("diswoot_queue_store_retries_total", (("queue", "outbound"),))] == 0
