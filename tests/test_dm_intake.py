"""A received DM is never dropped for the store's own failure, and the gateway session is never
saved past DMs that did not reach the store (the real daemon against the fakes, real sockets)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from diswoot import service
from diswoot.bridge.router import Intake, route_events
from diswoot.gateway.events import GatewayEvent, GatewayStatus, Resumed, SessionState
from diswoot.resume_point import SAVE_EVERY, SESSION_KEY, ResumePoint
from diswoot.store import open_store
from diswoot.store import queries as q
from diswoot.testing.harness import World, bridge_world

UID = "80351110224678912"
CEILING = 60
DISK_FULL = "database or disk is full"


def incoming(world: World) -> list[dict[str, Any]]:
    return [
        m
        for c in sorted(world.chatwoot.conversations)
        for m in world.chatwoot.messages_in(c)
        if m["message_type"] == 0
    ]


async def forwarded(world: World, *message_ids: str) -> list[str]:
    """Wait until every DM is in Chatwoot; the text of all incoming messages, in order."""
    await world.wait_for(
        lambda: set(message_ids) <= {m["source_id"] for m in incoming(world)}, timeout=30
    )
    return [m["content"] for m in incoming(world)]


def sample(world: World, name: str, labels: dict[str, str] | None = None) -> float:
    value = world.daemon.ctx.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def failing_accept_dms(monkeypatch: pytest.MonkeyPatch, times: float) -> list[int]:
    """The store's DM intake fails ``times`` times (math.inf: until undone) as a full disk
    does; the list counts the failures."""
    real, failures = q.accept_dms, [0]

    def accept_dms(*args: Any, **kwargs: Any) -> Any:
        if failures[0] < times:
            failures[0] += 1
            raise sqlite3.OperationalError(DISK_FULL)
        return real(*args, **kwargs)

    monkeypatch.setattr(q, "accept_dms", accept_dms)
    return failures


async def test_dms_the_store_could_not_take_are_kept_and_stored_once_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="diswoot.router")
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            failures = failing_accept_dms(monkeypatch, times=3)
            sent = [world.discord.user_sends(UID, text)["id"] for text in ("one", "two", "three")]
            assert await forwarded(world, *sent) == ["one", "two", "three"]
            assert failures[0] == 3
            assert sample(world, "diswoot_dm_store_retries_total") >= 1
            rejected = {"type": "MESSAGE_CREATE", "reason": "handler_error"}
            assert sample(world, "diswoot_events_rejected_total", rejected) == 0
            assert sample(world, "diswoot_dms_received_total") == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "could not store" in w] == [
        f"could not store 1 DM(s) (OperationalError: {DISK_FULL}); kept in memory and tried "
        "again until the store works"
    ]


async def saved_session(path: Path) -> Any:
    async with open_store(path) as store:
        return await store.call(q.get_value, SESSION_KEY)


async def test_the_session_is_not_saved_past_dms_that_were_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store fails until the daemon stops: the session saved before stays, so the next
    start RESUMEs from it and Discord's replay brings the DM (a later save would skip it)."""
    caplog.set_level(logging.WARNING, logger="diswoot.service")
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            before = world.discord.user_sends(UID, "before")["id"]
            await forwarded(world, before)
            await world.restart()  # a graceful stop saves the session; the start resumes it
            path = Path(world.cfg.diswoot_db_path)
            kept = await world.daemon.ctx.store.call(q.get_value, SESSION_KEY)
            assert kept is not None and kept["seq"] is not None

            failing_accept_dms(monkeypatch, times=float("inf"))
            monkeypatch.setattr(service, "GRACE_SECONDS", 1.0)
            stuck = world.discord.user_sends(UID, "stuck")["id"]
            await world.wait_for(lambda: sample(world, "diswoot_dm_store_retries_total") >= 2)
            await world.stop()  # the grace period ends with the DM still in memory
            assert await saved_session(path) == kept
            assert "the gateway session is not saved" in caplog.text

            monkeypatch.undo()  # the disk has room again
            await world.start()
            assert await forwarded(world, stuck) == ["before", "stuck"]
            assert len(world.discord.gateway.resumes) == 2  # type: ignore[attr-defined]


def set_read_only(db: sqlite3.Connection, on: bool) -> None:
    db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


async def test_an_edit_the_store_could_not_take_becomes_its_note_once_it_can(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            sent = world.discord.user_sends(UID, "my order is late")
            await forwarded(world, sent["id"])
            store = world.daemon.ctx.store
            await store.call(set_read_only, True)
            world.discord.user_edits(UID, sent["id"], "my order is very late")
            await world.wait_for(lambda: sample(world, "diswoot_dm_store_retries_total") >= 2)
            await store.call(set_read_only, False)
            notes = await world.wait_for(
                lambda: [
                    m["content"]
                    for c in world.chatwoot.conversations
                    for m in world.chatwoot.messages_in(c)
                    if m["private"]
                ],
                timeout=30,  # the inbound queue, which crashed on the read-only store, restarts
            )
            assert notes == ["✏️ edited: my order is very late"]
            rejected = {"type": "MESSAGE_UPDATE", "reason": "handler_error"}
            assert sample(world, "diswoot_events_rejected_total", rejected) == 0


async def test_an_event_handed_to_the_waiting_router_counts_until_the_router_takes_it(
    tmp_path: Path,
) -> None:
    """A send to a router that waits hands the event over directly: it is in no buffer and
    not yet taken, so the session must not be saved past it until the router has run."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, greeting_enabled=False) as world:
            daemon = world.daemon
            events_tx, events_rx = trio.open_memory_channel[GatewayEvent](64)
            intake, gateway = Intake(), GatewayStatus()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    route_events, events_rx, daemon.ctx, daemon.inbound, daemon.interactions,
                    intake,
                )
                await trio.testing.wait_all_tasks_blocked()
                assert intake.all_handled(gateway)  # waiting, nothing delivered
                events_tx.send_nowait(Resumed(replayed=0))  # what the gateway does, then
                gateway.delivered += 1  # counts it, with no checkpoint between
                assert events_rx.statistics().current_buffer_used == 0
                assert not intake.all_handled(gateway)
                await trio.testing.wait_all_tasks_blocked()
                assert intake.all_handled(gateway)
                await events_tx.aclose()


async def test_a_periodic_save_the_store_refuses_is_tried_again(
    tmp_path: Path, idle_jump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk while running: the session saved before stays, one warning, and the save
    is made once the database takes writes again (the saver does not end the daemon)."""
    caplog.set_level(logging.WARNING, logger="diswoot.service")
    async with open_store(tmp_path / "diswoot.db") as store:
        session = SessionState(session_id="abc", seq=1)
        point = ResumePoint(store, session, Intake(), GatewayStatus())
        async with trio.open_nursery() as nursery:
            await nursery.start(point.keep_saved)
            await trio.sleep(SAVE_EVERY * 1.5)
            assert (await store.call(q.get_value, SESSION_KEY))["seq"] == 1
            await store.call(set_read_only, True)
            session.seq = 2
            await trio.sleep(SAVE_EVERY * 3)
            assert (await store.call(q.get_value, SESSION_KEY))["seq"] == 1
            await store.call(set_read_only, False)
            await trio.sleep(SAVE_EVERY)
            assert (await store.call(q.get_value, SESSION_KEY))["seq"] == 2
            nursery.cancel_scope.cancel()
    saves = [r for r in caplog.records if "could not save the gateway session" in r.getMessage()]
    assert len(saves) == 1
