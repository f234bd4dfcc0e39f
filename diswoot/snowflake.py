"""Discord snowflake ids <-> UTC time (discord-api.md §6).

A snowflake is ``ms_since_discord_epoch << 22 | worker << 17 | process << 12 | increment``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DISCORD_EPOCH_MS = 1420070400000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_SNOWFLAKE = (1 << 64) - 1


def _as_int(snowflake: str | int) -> int:
    if isinstance(snowflake, str):
        text = snowflake.strip()
        if not text.isascii() or not text.isdigit():
            raise ValueError(f"not a snowflake: {snowflake!r}")
        value = int(text)
    else:
        value = snowflake
    if not 0 <= value <= _MAX_SNOWFLAKE:
        raise ValueError(f"snowflake out of range: {value}")
    return value


def snowflake_time(snowflake: str | int) -> datetime:
    """Creation time of a snowflake as an aware UTC datetime (millisecond precision)."""
    return _EPOCH + (_as_int(snowflake) >> 22) * _MS + DISCORD_EPOCH_MS * _MS


def snowflake_from_time(dt: datetime) -> int:
    """The lowest snowflake created in ``dt``'s millisecond (``dt`` must be aware)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("snowflake_from_time needs an aware datetime")
    unix_ms = (dt - _EPOCH) // _MS
    if unix_ms < DISCORD_EPOCH_MS:
        raise ValueError(f"{dt.isoformat()} is before the Discord epoch")
    return (unix_ms - DISCORD_EPOCH_MS) << 22


def history_after(dt: datetime) -> int:
    """The ``after=`` value that lists messages created at or after ``dt``."""
    return max(0, snowflake_from_time(dt) - 1)


__all__ = ["DISCORD_EPOCH_MS", "history_after", "snowflake_from_time", "snowflake_time"]
