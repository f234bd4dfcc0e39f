"""Working hours: Chatwoot semantics, overnight spans, DST gaps/folds, and properties."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diswoot.chatwoot.hours import DaySpec, WorkingHours, weekday_sunday_first
from diswoot.chatwoot.models import InboxConfig

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SECOND = timedelta(seconds=1)


def entry(day: int, hours: str) -> dict[str, Any]:
    """'closed', 'all', or 'HH:MM-HH:MM' -> one raw Chatwoot working_hours entry."""
    base: dict[str, Any] = {"day_of_week": day, "closed_all_day": False, "open_all_day": False}
    if hours == "closed":
        return base | {
            "closed_all_day": True,
            "open_hour": None,
            "open_minutes": None,
            "close_hour": None,
            "close_minutes": None,
        }
    if hours == "all":
        return base | {
            "open_all_day": True,
            "open_hour": None,
            "open_minutes": None,
            "close_hour": None,
            "close_minutes": None,
        }
    opening, closing = hours.split("-")
    oh, om = (int(x) for x in opening.split(":"))
    ch, cm = (int(x) for x in closing.split(":"))
    return base | {"open_hour": oh, "open_minutes": om, "close_hour": ch, "close_minutes": cm}


def schedule(tz: str, week: dict[int, str], enabled: bool = True) -> WorkingHours:
    """week: day_of_week -> hours; days not given are closed."""
    return WorkingHours.from_inbox(
        {
            "working_hours_enabled": enabled,
            "timezone": tz,
            "working_hours": [entry(d, week.get(d, "closed")) for d in range(7)],
        }
    )


OFFICE = {1: "09:00-17:00", 2: "09:00-17:00", 3: "09:00-17:00", 4: "09:00-17:00", 5: "09:00-17:00"}


def local(
    tz: ZoneInfo,
    y: int,
    mo: int,
    d: int,
    h: int = 0,
    mi: int = 0,
    s: int = 0,
    us: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=tz, fold=fold)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


# --------------------------------------------------------------------------- parsing
def test_weekday_is_sunday_first() -> None:
    assert weekday_sunday_first(datetime(2026, 3, 29).date()) == 0  # a Sunday
    assert weekday_sunday_first(datetime(2026, 6, 15).date()) == 1  # a Monday
    assert weekday_sunday_first(datetime(2026, 6, 20).date()) == 6  # a Saturday


def test_from_inbox_parses_chatwoot_defaults() -> None:
    wh = schedule("Europe/Berlin", OFFICE)
    assert wh.enabled and wh.tz == BERLIN
    assert wh.days[1] == DaySpec(closed=False, open_minute=540, close_minute=1020)
    assert wh.days[0] == DaySpec(closed=True)
    assert wh.days[6].closed


def test_an_inbox_parses_its_hours_once() -> None:
    """The inbound path asks for the hours on every DM: one parse per fetched inbox."""
    raw = {"id": 7, "timezone": "Europe/Berlin", "working_hours_enabled": True,
           "working_hours": [entry(d, OFFICE.get(d, "closed")) for d in range(7)]}
    inbox = InboxConfig.from_api(raw)
    assert inbox.hours is inbox.hours
    assert inbox.hours == WorkingHours.from_inbox(raw)
    assert InboxConfig.from_api(raw).hours is not inbox.hours  # a refetch parses anew


def test_open_all_day_is_whole_day() -> None:
    spec = DaySpec.from_entry(entry(3, "all"))
    assert spec.all_day and not spec.overnight


def test_tolerates_nulls_and_junk(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        wh = WorkingHours.from_inbox(
            {
                "working_hours_enabled": True,
                "timezone": "Mars/Olympus_Mons",
                "working_hours": [
                    None,
                    "junk",
                    {"day_of_week": True, "open_all_day": True},
                    {"day_of_week": 9, "open_all_day": True},
                    {"day_of_week": 1, "closed_all_day": False, "open_hour": None},
                    {"day_of_week": 2, "open_hour": 25, "open_minutes": 0, "close_hour": 3},
                    {
                        "day_of_week": 3,
                        "open_hour": 9,
                        "open_minutes": None,
                        "close_hour": 17,
                        "close_minutes": None,
                    },
                ],
            }
        )
    assert wh.tz == ZoneInfo("UTC")
    assert "Mars/Olympus_Mons" in caplog.text
    assert wh.days[1].closed and wh.days[2].closed
    assert wh.days[3] == DaySpec(closed=False, open_minute=540, close_minute=1020)
    assert set(wh.days) == {1, 2, 3}
    assert wh.is_open(utc(2026, 6, 17, 12))  # Wednesday noon UTC
    assert not wh.is_open(utc(2026, 6, 15, 12))  # Monday: unusable hours -> closed


@pytest.mark.parametrize("raw", [None, [], "nope"])
def test_enabled_without_entries_means_open(raw: Any) -> None:
    wh = WorkingHours.from_inbox(
        {"working_hours_enabled": True, "working_hours": raw, "timezone": None}
    )
    assert not wh.enabled
    assert wh.is_open(utc(2026, 1, 1))


def test_rejects_naive_datetimes() -> None:
    wh = schedule("UTC", OFFICE)
    with pytest.raises(ValueError):
        wh.is_open(datetime(2026, 6, 15, 12))
    with pytest.raises(ValueError):
        WorkingHours.always_open().next_opening(datetime(2026, 6, 15, 12))


# --------------------------------------------------------------------------- plain weeks
def test_inclusive_minute_resolution() -> None:
    wh = schedule("Europe/Berlin", OFFICE)
    assert not wh.is_open(local(BERLIN, 2026, 6, 15, 8, 59, 59))
    assert wh.is_open(local(BERLIN, 2026, 6, 15, 9, 0))
    assert wh.is_open(local(BERLIN, 2026, 6, 15, 17, 0, 59, 999999))
    assert not wh.is_open(local(BERLIN, 2026, 6, 15, 17, 1))
    assert not wh.is_open(local(BERLIN, 2026, 6, 20, 12, 0))  # Saturday


def test_answers_for_any_input_offset() -> None:
    wh = schedule("Europe/Berlin", OFFICE)
    # 09:30 in Berlin (CEST, +02:00) == 07:30 UTC == 03:30 in New York
    assert wh.is_open(local(NEW_YORK, 2026, 6, 15, 3, 30))
    assert not wh.is_open(local(NEW_YORK, 2026, 6, 15, 2, 30))


def test_next_change_and_next_opening_in_a_week() -> None:
    wh = schedule("Europe/Berlin", OFFICE)
    monday_8 = local(BERLIN, 2026, 6, 15, 8, 0)
    assert wh.next_change(monday_8) == local(BERLIN, 2026, 6, 15, 9, 0)
    assert wh.next_change(local(BERLIN, 2026, 6, 15, 12, 0)) == local(BERLIN, 2026, 6, 15, 17, 1)
    friday_evening = local(BERLIN, 2026, 6, 19, 18, 0)
    opening = wh.next_opening(friday_evening)
    assert opening == local(BERLIN, 2026, 6, 22, 9, 0)
    assert opening is not None and opening.tzinfo is UTC
    change = wh.next_change(monday_8)
    assert change is not None and change.tzinfo is UTC


def test_next_opening_when_open_is_now() -> None:
    wh = schedule("Europe/Berlin", OFFICE)
    noon = local(BERLIN, 2026, 6, 15, 12, 0)
    assert wh.next_opening(noon) == noon


def test_all_day_and_adjacent_spans_merge() -> None:
    wh = schedule("UTC", {1: "all", 2: "00:00-12:00", 5: "09:00-17:00", 6: "all"})
    assert wh.next_change(utc(2026, 6, 15, 10)) == utc(2026, 6, 16, 12, 1)  # Mon -> Tue 12:01
    assert wh.next_change(utc(2026, 6, 19, 17, 30)) == utc(2026, 6, 20, 0, 0)  # Fri -> Sat
    assert wh.next_change(utc(2026, 6, 20, 12)) == utc(2026, 6, 21, 0, 0)  # Sat -> Sun closed
    assert wh.is_open(utc(2026, 6, 20, 23, 59, 59))
    assert not wh.is_open(utc(2026, 6, 21, 0, 0))


def test_overnight_span_runs_past_midnight() -> None:
    wh = schedule("UTC", {5: "22:00-02:00", 6: "closed", 0: "closed"})
    assert not wh.is_open(utc(2026, 6, 19, 21, 59))
    assert wh.is_open(utc(2026, 6, 19, 23, 0))
    assert wh.is_open(utc(2026, 6, 20, 1, 30))  # Saturday early morning: Friday's span
    assert wh.is_open(utc(2026, 6, 20, 2, 0, 59))
    assert not wh.is_open(utc(2026, 6, 20, 2, 1))
    assert wh.next_change(utc(2026, 6, 19, 23)) == utc(2026, 6, 20, 2, 1)
    assert wh.next_opening(utc(2026, 6, 20, 3)) == utc(2026, 6, 26, 22, 0)


def test_overnight_saturday_into_closed_sunday() -> None:
    wh = schedule("UTC", {6: "20:00-06:00"})
    assert wh.is_open(utc(2026, 6, 21, 5, 0))  # Sunday 05:00, Sunday itself closed
    assert not wh.is_open(utc(2026, 6, 21, 7, 0))


def test_overnight_chain_covering_everything_never_changes() -> None:
    wh = schedule("UTC", dict.fromkeys(range(7), "12:00-11:59"))
    at = utc(2026, 6, 15, 3)
    assert wh.is_open(at)
    assert wh.next_change(at) is None
    assert wh.next_opening(at) == at


def test_disabled_is_always_open() -> None:
    wh = schedule("Europe/Berlin", {}, enabled=False)
    at = local(BERLIN, 2026, 6, 20, 3, 0)
    assert wh.is_open(at)
    assert wh.next_change(at) is None
    assert wh.next_opening(at) == at
    assert WorkingHours.always_open().is_open(at)


def test_all_days_closed_never_opens() -> None:
    wh = schedule("Europe/Berlin", {})
    at = local(BERLIN, 2026, 6, 15, 12, 0)
    assert not wh.is_open(at)
    assert wh.next_change(at) is None
    assert wh.next_opening(at) is None


def test_all_days_open_all_day_never_changes() -> None:
    wh = schedule("Europe/Berlin", dict.fromkeys(range(7), "all"))
    assert wh.is_open(utc(2026, 3, 29, 1, 30))
    assert wh.next_change(utc(2026, 3, 29, 1, 30)) is None


# --------------------------------------------------------------------------- DST
def test_berlin_spring_forward_opening_in_the_gap() -> None:
    """2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC; 02:30 does not exist."""
    wh = schedule("Europe/Berlin", {0: "02:30-10:00"})
    assert not wh.is_open(utc(2026, 3, 29, 0, 59, 59))
    assert wh.is_open(utc(2026, 3, 29, 1, 0))  # the wall clock reads 03:00, past 02:30
    assert wh.next_opening(local(BERLIN, 2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 0)
    assert wh.next_change(utc(2026, 3, 29, 1, 0)) == local(BERLIN, 2026, 3, 29, 10, 1)
    assert wh.next_change(utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 29, 8, 1)


def test_berlin_spring_forward_closing_in_the_gap() -> None:
    wh = schedule("Europe/Berlin", {0: "00:30-02:15"})
    assert wh.is_open(utc(2026, 3, 29, 0, 59, 59))  # 01:59:59 CET
    assert wh.next_change(utc(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 0)  # closes at the jump


def test_berlin_span_entirely_in_the_gap_vanishes() -> None:
    wh = schedule("Europe/Berlin", {0: "02:10-02:40"})
    opening = wh.next_opening(local(BERLIN, 2026, 3, 28, 12, 0))
    assert opening == local(BERLIN, 2026, 4, 5, 2, 10)  # the following Sunday
    # a week before, the same span is a normal half hour
    assert wh.next_opening(local(BERLIN, 2026, 3, 21, 12, 0)) == local(BERLIN, 2026, 3, 22, 2, 10)


def test_berlin_fall_back_stays_open_through_the_repeated_hour() -> None:
    """2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00 UTC; 02:xx happens twice."""
    wh = schedule("Europe/Berlin", {0: "02:30-05:00"})
    assert not wh.is_open(utc(2026, 10, 25, 0, 29))  # 02:29 CEST
    assert wh.is_open(utc(2026, 10, 25, 0, 30))  # first 02:30 CEST
    assert wh.is_open(utc(2026, 10, 25, 1, 15))  # second 02:15 CET: no blip
    assert wh.next_change(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 4, 1)  # 05:01 CET
    second_pass = local(BERLIN, 2026, 10, 25, 2, 45, fold=1)
    assert second_pass.astimezone(UTC) == utc(2026, 10, 25, 1, 45)
    assert wh.next_opening(second_pass) == utc(2026, 10, 25, 1, 45)
    assert wh.next_opening(local(BERLIN, 2026, 10, 25, 5, 30)) == local(BERLIN, 2026, 11, 1, 2, 30)


def test_new_york_fall_back_closes_at_first_occurrence() -> None:
    """2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00 UTC."""
    wh = schedule("America/New_York", {0: "00:00-01:30", 1: "09:00-17:00"})
    assert wh.is_open(utc(2026, 11, 1, 5, 30, 59))  # 01:30 EDT
    assert wh.next_change(utc(2026, 11, 1, 5, 0)) == utc(2026, 11, 1, 5, 31)
    assert not wh.is_open(utc(2026, 11, 1, 6, 15))  # 01:15 EST, second pass
    assert wh.next_opening(utc(2026, 11, 1, 6, 15)) == local(NEW_YORK, 2026, 11, 2, 9, 0)


def test_new_york_spring_forward() -> None:
    """2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00 UTC."""
    wh = schedule("America/New_York", {0: "02:15-09:00"})
    assert wh.next_opening(local(NEW_YORK, 2026, 3, 8, 0, 0)) == utc(2026, 3, 8, 7, 0)
    assert not wh.is_open(utc(2026, 3, 8, 6, 59, 59))
    # Office hours keep their wall-clock time across the switch (UTC shifts by an hour).
    office = schedule("America/New_York", OFFICE)
    assert office.next_opening(local(NEW_YORK, 2026, 3, 6, 18, 0)) == utc(2026, 3, 9, 13, 0)
    assert office.next_opening(local(NEW_YORK, 2026, 3, 2, 8, 0)) == utc(2026, 3, 2, 14, 0)


# --------------------------------------------------------------------------- properties
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "Pacific/Apia",
]

minutes = st.integers(min_value=0, max_value=1439)
day_entries = st.one_of(
    st.just("closed"),
    st.just("all"),
    st.tuples(minutes, minutes).map(lambda t: f"{t[0] // 60}:{t[0] % 60}-{t[1] // 60}:{t[1] % 60}"),
)
schedules = st.builds(
    lambda tz, days: schedule(tz, dict(enumerate(days))),
    st.sampled_from(ZONES),
    st.lists(day_entries, min_size=7, max_size=7),
)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


def wall_clock_oracle(wh: WorkingHours, at: datetime) -> bool:
    """The original's minute comparison on the local wall clock, extended with overnight."""
    wall = at.astimezone(wh.tz)
    minute = wall.hour * 60 + wall.minute
    today = wh.days[weekday_sunday_first(wall.date())]
    yesterday = wh.days[(weekday_sunday_first(wall.date()) - 1) % 7]
    if yesterday.overnight and minute <= yesterday.close_minute:
        return True
    if today.closed:
        return False
    if today.overnight:
        return minute >= today.open_minute
    return today.open_minute <= minute <= today.close_minute


@settings(max_examples=200)
@given(schedules, instants)
def test_matches_wall_clock_away_from_offset_changes(wh: WorkingHours, at: datetime) -> None:
    day = timedelta(days=1)
    if (at - day).astimezone(wh.tz).utcoffset() != (at + day).astimezone(wh.tz).utcoffset():
        return  # near a DST switch the wall clock is ambiguous; covered by the tests above
    assert wh.is_open(at) == wall_clock_oracle(wh, at)


@settings(max_examples=200)
@given(schedules, instants, st.lists(st.floats(0, 1, exclude_max=True), max_size=20))
def test_is_open_is_constant_until_next_change(
    wh: WorkingHours, at: datetime, fractions: list[float]
) -> None:
    state = wh.is_open(at)
    change = wh.next_change(at)
    if change is None:
        for f in fractions:
            assert wh.is_open(at + f * timedelta(days=30)) == state
        return
    assert change > at and change.tzinfo is UTC
    assert change - at <= timedelta(days=14)
    assert wh.is_open(change) != state
    for f in fractions:
        sample = at + (change - at) * f
        assert sample >= change or wh.is_open(sample) == state
    assert wh.is_open(change - timedelta(microseconds=1)) == state


@settings(max_examples=200)
@given(schedules, instants)
def test_next_opening_is_open_and_earliest(wh: WorkingHours, at: datetime) -> None:
    opening = wh.next_opening(at)
    if opening is None:
        assert all(not s.all_day for s in wh.days.values())
        assert not wh.is_open(at)
        assert not wh.is_open(at + timedelta(days=3, hours=7))
        return
    assert opening >= at
    assert wh.is_open(opening)
    if opening > at:
        assert not wh.is_open(at)
        assert opening == wh.next_change(at)
        assert not wh.is_open(opening - timedelta(microseconds=1))


@given(schedules, instants)
def test_disabled_schedules_are_always_open(wh: WorkingHours, at: datetime) -> None:
    off = WorkingHours(enabled=False, tz=wh.tz, days=wh.days)
    assert off.is_open(at) and off.next_change(at) is None and off.next_opening(at) == at
