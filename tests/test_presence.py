"""Bot presence follows the inbox's working hours: pure decisions, then the loop under MockClock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import trio
import trio.testing

from diswoot.bridge.presence import (
    BOUNDARY_SLACK,
    presence_for,
    run_presence,
    seconds_until_recheck,
)
from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.hours import WorkingHours
from diswoot.chatwoot.inbox_cache import InboxCache
from diswoot.chatwoot.models import InboxConfig
from diswoot.config import Config, test_config
from diswoot.context import Context
from diswoot.gateway.events import Presence

HOUR_MS = 3_600_000
CFG = test_config(
    presence_online_text="We are here",
    presence_offline_text="Back tomorrow",
    presence_poll_interval_ms=HOUR_MS,
)
ONLINE = Presence(status="online", text="We are here")
IDLE = Presence(status="idle", text="Back tomorrow")
MONDAY = datetime(2024, 6, 3, tzinfo=UTC)  # a Monday


def day(
    day_of_week: int, opening: tuple[int, int] | None, closing: tuple[int, int]
) -> dict[str, Any]:
    """One raw Chatwoot ``working_hours`` entry; ``opening=None`` means closed all day."""
    if opening is None:
        return {"day_of_week": day_of_week, "closed_all_day": True, "open_all_day": False,
                "open_hour": None, "open_minutes": None, "close_hour": None, "close_minutes": None}
    return {"day_of_week": day_of_week, "closed_all_day": False, "open_all_day": False,
            "open_hour": opening[0], "open_minutes": opening[1],
            "close_hour": closing[0], "close_minutes": closing[1]}


def inbox(tz: str = "UTC", *, enabled: bool = True, weekend: bool = False) -> dict[str, Any]:
    """An inbox JSON open 09:00-17:00 on weekdays (and at weekends when ``weekend``)."""
    hours = [
        day(d, (9, 0) if weekend or d not in (0, 6) else None, (17, 0)) for d in range(7)
    ]
    return {"id": 7, "name": "Discord", "channel_type": "Channel::Api", "timezone": tz,
            "working_hours_enabled": enabled, "working_hours": hours}


CLOSED_ALL_WEEK = inbox() | {"working_hours": [day(d, None, (0, 0)) for d in range(7)]}


# ---------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (MONDAY + timedelta(hours=8, minutes=59, seconds=59), IDLE),
        (MONDAY + timedelta(hours=9), ONLINE),
        (MONDAY + timedelta(hours=12), ONLINE),
        (MONDAY + timedelta(hours=17, seconds=59), ONLINE),  # Chatwoot: 17:00 is inclusive
        (MONDAY + timedelta(hours=17, minutes=1), IDLE),
        (MONDAY - timedelta(hours=12), IDLE),  # Sunday noon
    ],
)
def test_presence_for_follows_working_hours(at: datetime, expected: Presence) -> None:
    assert presence_for(CFG, WorkingHours.from_inbox(inbox()), at) == expected


def test_disabled_working_hours_mean_always_online() -> None:
    hours = WorkingHours.from_inbox(inbox(enabled=False))
    sunday_night = MONDAY - timedelta(hours=2)
    assert presence_for(CFG, hours, sunday_night) == ONLINE
    assert seconds_until_recheck(CFG, hours, sunday_night) == HOUR_MS / 1000


def test_closed_all_week_is_idle_and_polls() -> None:
    hours = WorkingHours.from_inbox(CLOSED_ALL_WEEK)
    assert presence_for(CFG, hours, MONDAY + timedelta(hours=12)) == IDLE
    assert seconds_until_recheck(CFG, hours, MONDAY) == HOUR_MS / 1000


def test_recheck_at_the_boundary_when_it_comes_before_the_poll() -> None:
    hours = WorkingHours.from_inbox(inbox())
    before_opening = MONDAY + timedelta(hours=8, minutes=30)
    assert seconds_until_recheck(CFG, hours, before_opening) == 1800 + BOUNDARY_SLACK
    before_closing = MONDAY + timedelta(hours=17, minutes=0, seconds=30)
    assert seconds_until_recheck(CFG, hours, before_closing) == 30 + BOUNDARY_SLACK


def test_recheck_after_the_poll_interval_when_the_boundary_is_later() -> None:
    hours = WorkingHours.from_inbox(inbox())
    assert seconds_until_recheck(CFG, hours, MONDAY + timedelta(hours=10)) == 3600
    short_poll = CFG.replace(presence_poll_interval_ms=1500)
    assert seconds_until_recheck(short_poll, hours, MONDAY + timedelta(hours=10)) == 1.5


@pytest.mark.parametrize(
    ("evening_utc", "opening_utc"),
    [
        # Berlin springs forward on Sunday 2024-03-31: 17:30 CET -> 09:00 CEST is 14.5 h
        (datetime(2024, 3, 30, 16, 30, tzinfo=UTC), datetime(2024, 3, 31, 7, 0, tzinfo=UTC)),
        # ... and falls back on Sunday 2024-10-27: 17:30 CEST -> 09:00 CET is 16.5 h
        (datetime(2024, 10, 26, 15, 30, tzinfo=UTC), datetime(2024, 10, 27, 8, 0, tzinfo=UTC)),
    ],
)
def test_boundaries_across_dst_changes(evening_utc: datetime, opening_utc: datetime) -> None:
    hours = WorkingHours.from_inbox(inbox("Europe/Berlin", weekend=True))
    day_cfg = CFG.replace(presence_poll_interval_ms=48 * HOUR_MS)
    assert presence_for(day_cfg, hours, evening_utc) == IDLE
    wait = seconds_until_recheck(day_cfg, hours, evening_utc)
    assert wait == (opening_utc - evening_utc).total_seconds() + BOUNDARY_SLACK
    assert presence_for(day_cfg, hours, opening_utc) == ONLINE
    assert presence_for(day_cfg, hours, opening_utc - timedelta(seconds=1)) == IDLE


# ---------------------------------------------------------------------------- the loop


class StaticInbox:
    """Stands in for ChatwootClient.get_inbox: serves ``raw``, counts calls."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.calls = 0

    async def get_inbox(self) -> InboxConfig:
        self.calls += 1
        return InboxConfig.from_api(self.raw)


@dataclass
class PresenceWorld:
    """The parts of a Context run_presence uses, a wall clock derived from trio time."""

    cfg: Config
    inbox: InboxCache
    presence_tx: trio.MemorySendChannel[Presence]
    start: datetime
    clock_reads: list[float] = field(default_factory=list)

    def clock(self) -> float:
        self.clock_reads.append(trio.current_time())
        return self.start.timestamp() + trio.current_time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.start.timestamp() + trio.current_time(), UTC)


async def start_presence(
    nursery: trio.Nursery, raw: dict[str, Any], start: datetime, cfg: Config = CFG
) -> tuple[PresenceWorld, StaticInbox, trio.MemoryReceiveChannel[Presence], trio.Event]:
    """Warm an InboxCache on ``raw`` and run run_presence from wall time ``start``."""
    assert trio.current_time() == 0  # the MockClock starts at zero
    source = StaticInbox(raw)
    cache = InboxCache(cast(ChatwootClient, source))
    await cache.refresh()
    send, receive = trio.open_memory_channel[Presence](0)
    world = PresenceWorld(cfg=cfg, inbox=cache, presence_tx=send, start=start)
    stop = trio.Event()
    nursery.start_soon(run_presence, cast(Context, world), stop)
    return world, source, receive, stop


async def test_switches_exactly_at_closing_and_opening(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(3 * 86400):
        start = MONDAY + timedelta(hours=16, minutes=59)
        world, _, presences, stop = await start_presence(nursery, inbox(), start)
        assert await presences.receive() == ONLINE
        assert trio.current_time() == 0

        assert await presences.receive() == IDLE
        closing = MONDAY + timedelta(hours=17, minutes=1)
        assert closing <= world.now() <= closing + timedelta(seconds=1)

        assert await presences.receive() == ONLINE
        opening = MONDAY + timedelta(days=1, hours=9)
        assert opening <= world.now() <= opening + timedelta(seconds=1)
        stop.set()


async def test_polls_at_the_configured_interval(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(600):
        cfg = CFG.replace(presence_poll_interval_ms=60_000)
        world, _, presences, stop = await start_presence(
            nursery, inbox(enabled=False), MONDAY, cfg
        )
        assert await presences.receive() == ONLINE
        await trio.sleep(330)
        stop.set()
        await trio.testing.wait_all_tasks_blocked()
    # one evaluation at start and one per minute, nothing in between, nothing sent twice
    assert world.clock_reads == [0, 60, 120, 180, 240, 300]
    with pytest.raises(trio.WouldBlock):
        presences.receive_nowait()


async def test_inbox_change_re_evaluates_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    with trio.fail_after(600):
        world, source, presences, stop = await start_presence(
            nursery, inbox(enabled=False), MONDAY + timedelta(hours=12)
        )
        assert await presences.receive() == ONLINE
        await trio.sleep(100)
        source.raw = CLOSED_ALL_WEEK
        await world.inbox.refresh()
        assert await presences.receive() == IDLE
        assert trio.current_time() == 100  # not at the next poll, an hour later
        source.raw = inbox(enabled=False)
        await world.inbox.refresh()
        assert await presences.receive() == ONLINE
        assert trio.current_time() == 100
        stop.set()


async def test_unchanged_refresh_sends_nothing_and_stop_ends_the_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            world, source, presences, stop = await start_presence(
                nursery, inbox(), MONDAY + timedelta(hours=12)
            )
            assert await presences.receive() == ONLINE
            await world.inbox.refresh()  # same config: no change event, no new presence
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                presences.receive_nowait()
            stop.set()
        # the nursery closed, so run_presence returned on stop
        assert trio.current_time() == 0
        assert source.calls == 2


async def test_cold_cache_means_online(autojump_clock: trio.testing.MockClock) -> None:
    """Before the first successful inbox fetch the bot shows online, as the original did."""
    with trio.fail_after(60):
        source = StaticInbox(CLOSED_ALL_WEEK)
        send, presences = trio.open_memory_channel[Presence](1)
        world = PresenceWorld(cfg=CFG, inbox=InboxCache(cast(ChatwootClient, source)),
                              presence_tx=send, start=MONDAY + timedelta(hours=12))
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_presence, cast(Context, world), stop)
            assert await presences.receive() == ONLINE
            await world.inbox.refresh()  # first config arrives: closed all week
            assert await presences.receive() == IDLE
            stop.set()
