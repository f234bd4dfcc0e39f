"""Snowflake <-> time conversions, checked with the vectors in discord-api.md §6."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diswoot.snowflake import (
    DISCORD_EPOCH_MS,
    history_after,
    snowflake_from_time,
    snowflake_time,
)


def test_epoch_constant() -> None:
    assert DISCORD_EPOCH_MS == 1420070400000
    assert snowflake_time(0) == datetime(2015, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("snowflake", "expected"),
    [
        ("661720302316814366", datetime(2020, 1, 1, 0, 0, 14, tzinfo=UTC)),
        (1000000000000000000, datetime(2022, 7, 22, 11, 22, 59, tzinfo=UTC)),
    ],
)
def test_doc_vectors_time(snowflake: str | int, expected: datetime) -> None:
    got = snowflake_time(snowflake)
    assert got.replace(microsecond=0) == expected  # the doc gives whole seconds
    unix_ms = (int(snowflake) >> 22) + 1420070400000
    assert got == datetime.fromtimestamp(unix_ms // 1000, UTC).replace(
        microsecond=unix_ms % 1000 * 1000
    )
    assert got.tzinfo is UTC


def test_doc_vector_from_time() -> None:
    assert snowflake_from_time(datetime(2026, 1, 1, tzinfo=UTC)) == 1456074443980800000


def test_from_time_accepts_other_offsets_and_truncates_to_ms() -> None:
    plus2 = timezone(timedelta(hours=2))
    dt = datetime(2026, 1, 1, 2, 0, 0, 999, tzinfo=plus2)  # 999 us: same millisecond
    assert snowflake_from_time(dt) == 1456074443980800000


def test_history_after_includes_that_millisecond() -> None:
    dt = datetime(2026, 1, 1, tzinfo=UTC)
    assert history_after(dt) == 1456074443980800000 - 1
    assert history_after(datetime(2015, 1, 1, tzinfo=UTC)) == 0


@pytest.mark.parametrize("bad", ["", "abc", "-1", "12.5", "١٢٣", str(1 << 64), -5])
def test_rejects_bad_snowflakes(bad: str | int) -> None:
    with pytest.raises(ValueError):
        snowflake_time(bad)


def test_from_time_rejects_naive_and_pre_epoch() -> None:
    with pytest.raises(ValueError):
        snowflake_from_time(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        snowflake_from_time(datetime(2014, 12, 31, tzinfo=UTC))


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_round_trip_gives_lowest_id_of_the_millisecond(snowflake: int) -> None:
    low = snowflake_from_time(snowflake_time(snowflake))
    assert low == snowflake >> 22 << 22
    assert low <= snowflake < low + (1 << 22)
    assert snowflake_time(str(snowflake)) == snowflake_time(snowflake)


@given(
    st.datetimes(
        min_value=datetime(2015, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_time_round_trip_to_the_millisecond(dt: datetime) -> None:
    back = snowflake_time(snowflake_from_time(dt))
    assert timedelta(0) <= dt - back < timedelta(milliseconds=1)
