"""Hostile gateway input, Discord outages at start, signals during start-up, crashed tasks.

The real daemon against the fakes over 127.0.0.1 (``bridge_world``), or as a real
``python -m diswoot`` child (``daemon_process``) where a signal is sent.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from diswoot.chatwoot.signature import sign
from diswoot.store import queries as q
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.fake_gateway import FakeGateway
from diswoot.testing.harness import (
    WEBHOOK_SECRET,
    World,
    bridge_world,
    daemon_process,
    world_config,
)

UID = "80351110224678912"
CEILING = 60


def gateway(world: World) -> FakeGateway:
    return cast(FakeGateway, world.discord.gateway)


def contents(world: World) -> list[str]:
    """The contents of the incoming messages in Chatwoot, in order."""
    return [
        m["content"]
        for m in sorted(world.chatwoot.messages.values(), key=lambda m: int(m["id"]))
        if m.get("message_type") in (0, "incoming")
    ]


async def rejected(world: World) -> dict[tuple[str, str], float]:
    """``diswoot_events_rejected_total`` by (type, reason), read from GET /metrics."""
    response = await world.http.get(world.base_url + "/metrics")
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "diswoot_events_rejected_total":
                found[(sample.labels["type"], sample.labels["reason"])] = sample.value
    return found


async def delivered(world: World, *expected: str) -> None:
    await world.wait_for(lambda: contents(world) == list(expected), timeout=CEILING)


async def test_malformed_dms_are_skipped_counted_and_never_replayed(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            fake = gateway(world)
            world.discord.add_user(UID, "alice")
            first = world.discord.user_sends(UID, "first")
            await delivered(world, "first")
            base = int(first["id"])

            def variant(n: int, **changes: Any) -> dict[str, Any]:
                return {**first, "id": str(base + n), **changes}

            no_channel = variant(1)
            del no_channel["channel_id"]
            fake.dispatch("MESSAGE_CREATE", no_channel)
            fake.dispatch("MESSAGE_CREATE", variant(2, author="alice"))
            fake.dispatch("MESSAGE_CREATE", variant(3, id=base + 3))
            fake.dispatch("MESSAGE_CREATE", ["not", "an", "object"])
            fake.dispatch("MESSAGE_CREATE", variant(4, type="DEFAULT"))
            fake.dispatch(None, variant(5))  # no event name
            fake.dispatch("MESSAGE_CREATE", variant(6, type=7))  # a system message: ignored
            fake.send_frame("{this is not json")
            bad_seq = fake.last_seq
            second = world.discord.user_sends(UID, "second")
            await delivered(world, "first", "second")

            assert await rejected(world) == {
                ("MESSAGE_CREATE", "malformed"): 5,
                ("other", "malformed"): 1,
                ("other", "undecodable"): 1,
            }
            assert world.daemon is not None and fake.connections == 1 and fake.resumes == []
            await world.stop()
            last_seq = fake.last_seq
            assert bad_seq is not None and last_seq is not None and last_seq > bad_seq

            await world.start()
            await fake.wait_handshakes(2)
            # the RESUME starts past the bad events: none of them is replayed
            assert [r["d"]["seq"] for r in fake.resumes] == [last_seq]
            world.discord.user_sends(UID, "third")
            await delivered(world, "first", "second", "third")
            assert await rejected(world) == {}  # the new daemon saw none of them again
            assert (fake.connections, len(fake.resumes), len(fake.identifies)) == (2, 1, 1)
            assert second["id"] != first["id"]


def reply_body() -> dict[str, Any]:
    """An agent reply webhook for a conversation the daemon has never seen (it is stored)."""
    return {
        "event": "message_created",
        "id": 9002,
        "message_type": "outgoing",
        "private": False,
        "content": "How can I help?",
        "content_type": "text",
        "content_attributes": {},
        "sender": {"id": 3, "name": "Bob", "type": "user"},
        "account": {"id": 1, "name": "Acme"},
        "inbox": {"id": 7, "name": "Discord"},
        "conversation": {
            "id": 42,
            "inbox_id": 7,
            "status": "open",
            "meta": {"sender": {"id": 55, "identifier": f"discord:{UID}", "type": "contact"}},
        },
    }


def signed(raw: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "X-Chatwoot-Timestamp": timestamp,
        "X-Chatwoot-Signature": sign(WEBHOOK_SECRET, timestamp, raw),
    }


async def test_discord_down_at_start_serves_webhooks_and_connects_once_back(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, start=False) as world:
            fake = gateway(world)
            fake.stop_listening()  # connections to the gateway are refused
            # and the first GET /gateway/bot answers something unusable
            world.discord.fail_next("GET", r"/gateway/bot$", 200, raw_body=b'{"shards": 1}')
            await world.start()
            status = world.daemon.ctx.gateway
            await world.wait_for(lambda: status.reconnects >= 2)  # a bad url, a refused connect

            health = await world.http.get(world.base_url + "/health")
            assert health.status_code == 503
            assert health.json()["gateway"]["state"] in ("connecting", "disconnected")
            raw = json.dumps(reply_body()).encode()
            response = await world.post_webhook(raw, signed(raw))
            assert response.status_code == 200
            assert response.json()["outcome"] == "stored"
            jobs = await world.daemon.ctx.store.call(q.list_jobs, ("pending", "done", "dead"))
            assert [j.dedupe_key for j in jobs if j.kind == "reply"] == ["msg:9002"]

            await fake.listen_again()  # Discord is back
            await fake.wait_ready()

            while True:
                answer = await world.http.get(world.base_url + "/health")
                if answer.status_code == 200:
                    break
                await trio.sleep(0.05)
            assert len(fake.identifies) == 1 and fake.connections == 1


async def test_sigterm_during_start_up_exits_zero_promptly(tmp_path: Path) -> None:
    """Chatwoot accepts the connection but never answers: the start-up probe hangs."""
    async with trio.open_nursery() as nursery:
        discord, chatwoot = FakeDiscord(), FakeChatwoot(webhook_secret=WEBHOOK_SECRET, latency=3600)
        await discord.serve(nursery)
        await chatwoot.serve(nursery)
        cfg = world_config(tmp_path / "diswoot.db", discord, chatwoot)
        async with daemon_process(cfg) as proc:
            inbox = f"/inboxes/{cfg.chatwoot_inbox_id}"
            with trio.fail_after(30):  # the daemon is probing Chatwoot's inbox at start-up
                while not any(r.path.endswith(inbox) for r in chatwoot.requests):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                await proc.wait()
            assert proc.returncode == 0
        assert discord.gateway.url and not gateway_connected(discord)
        nursery.cancel_scope.cancel()


def gateway_connected(discord: FakeDiscord) -> bool:
    return cast(FakeGateway, discord.gateway).connections > 0


async def test_a_crashing_background_task_is_restarted_and_the_daemon_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A presence text Discord would refuse makes the presence task raise at every run."""

    def presence_failures() -> int:
        return sum(
            r.name == "diswoot.supervise" and r.getMessage().startswith("task presence failed")
            for r in caplog.records
        )

    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, presence_online_text="x" * 600) as world:
            await gateway(world).wait_ready()
            await world.wait_for(lambda: presence_failures() >= 2)  # restarted, failed again
            world.discord.add_user(UID, "alice")
            world.discord.user_sends(UID, "still working")
            await delivered(world, "still working")
            async with httpx.AsyncClient() as http:
                health = await http.get(world.base_url + "/health")
            assert health.status_code == 200
            assert world.daemon is not None


def set_read_only(db: sqlite3.Connection, on: bool) -> None:
    db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


async def test_dms_wait_out_a_database_that_refuses_writes(tmp_path: Path) -> None:
    """The database refuses writes (a full or read-only disk) while DMs come in: they are kept
    in memory and tried again - counted as store retries, not as rejected events - and are
    stored, in order, once it takes writes again."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            fake = gateway(world)
            await fake.wait_ready()
            world.discord.add_user(UID, "alice")
            await world.daemon.ctx.store.call(set_read_only, True)
            world.discord.user_sends(UID, "while the disk is full")
            world.discord.user_sends(UID, "and again")
            metrics = world.daemon.ctx.metrics.registry
            await world.wait_for(
                lambda: (metrics.get_sample_value("diswoot_dm_store_retries_total") or 0) >= 2
            )
            assert await rejected(world) == {}
            await world.daemon.ctx.store.call(set_read_only, False)
            world.discord.user_sends(UID, "after the disk recovered")
            await delivered(
                world, "while the disk is full", "and again", "after the disk recovered"
            )
            assert fake.connections == 1 and fake.resumes == []
            assert await world.acknowledged_seq() == fake.last_seq


async def test_a_failing_handler_is_counted_and_the_router_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing a DM fails for a reason of its own (not the store's): it is skipped, counted,
    never replayed, and the DMs after it go through."""
    real = q.accept_dms

    def accept_dms(db: sqlite3.Connection, queue: str, dms: list[Any], now: float) -> Any:
        if any(dm.payload["message"]["content"] == "the one that fails" for dm in dms):
            raise ValueError("a DM the store cannot take")
        return real(db, queue, dms, now)

    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            fake = gateway(world)
            await fake.wait_ready()
            world.discord.add_user(UID, "alice")
            monkeypatch.setattr(q, "accept_dms", accept_dms)
            lost = world.discord.user_sends(UID, "the one that fails")
            while True:
                if await rejected(world) == {("MESSAGE_CREATE", "handler_error"): 1}:
                    break
                await trio.sleep(0.05)
            world.discord.user_sends(UID, "the next one")
            await delivered(world, "the next one")
            assert fake.connections == 1 and fake.resumes == []
            assert await world.acknowledged_seq() == fake.last_seq  # the failed DM too
            assert lost["content"] not in contents(world)
