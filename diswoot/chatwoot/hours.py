"""Working hours of a Chatwoot inbox (pure; chatwoot-api.md §3.4).

Open or closed is what Chatwoot's own check (``WorkingHour#open_at?``) says, in the inbox
timezone at minute resolution; beyond Chatwoot, a span may run past midnight.  A wall-clock time
that DST skips or repeats means the first instant at which the clock reads it or later.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

MINUTES_PER_DAY = 24 * 60
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
# A weekly schedule that is not constant changes within any 8 days; 14 leaves room for the
# odd week where a DST gap swallows a short span.
_HORIZON = timedelta(days=14)


@dataclass(frozen=True)
class DaySpec:
    """One weekday: open on local minutes ``open_minute..close_minute`` inclusive.

    ``close_minute < open_minute`` is an overnight span ending on the next day.
    """

    closed: bool = True
    open_minute: int = 0
    close_minute: int = MINUTES_PER_DAY - 1

    @property
    def overnight(self) -> bool:
        return not self.closed and self.close_minute < self.open_minute

    @property
    def all_day(self) -> bool:
        return not self.closed and self.open_minute == 0 and self.close_minute == 1439

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> DaySpec:
        """Parse one ``working_hours`` entry; unusable hours mean closed."""
        if entry.get("closed_all_day"):
            return cls(closed=True)
        if entry.get("open_all_day"):
            return cls(closed=False)
        opening = _minute_of_day(entry.get("open_hour"), entry.get("open_minutes"))
        closing = _minute_of_day(entry.get("close_hour"), entry.get("close_minutes"))
        if opening is None or closing is None:
            return cls(closed=True)
        return cls(closed=False, open_minute=opening, close_minute=closing)


def _minute_of_day(hour: Any, minute: Any) -> int | None:
    if isinstance(hour, bool) or not isinstance(hour, int):
        return None
    if minute is None:
        minute = 0
    if isinstance(minute, bool) or not isinstance(minute, int):
        return None
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return hour * 60 + minute


def weekday_sunday_first(day: date) -> int:
    """Chatwoot's ``day_of_week``: 0 = Sunday ... 6 = Saturday."""
    return (day.weekday() + 1) % 7


def _zone(name: Any) -> ZoneInfo:
    if isinstance(name, str) and name.strip():
        try:
            return ZoneInfo(name.strip())
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if name not in (None, "", "UTC"):
        log.warning("inbox timezone %r is unknown; using UTC", name)
    return ZoneInfo("UTC")


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("working hours need an aware datetime")
    return at.astimezone(UTC)


@dataclass(frozen=True)
class WorkingHours:
    """An inbox's weekly schedule; ``days`` is keyed by ``day_of_week`` (0 = Sunday)."""

    enabled: bool
    tz: ZoneInfo
    days: dict[int, DaySpec]

    @classmethod
    def always_open(cls) -> WorkingHours:
        return cls(enabled=False, tz=ZoneInfo("UTC"), days={})

    @classmethod
    def from_inbox(cls, inbox: Mapping[str, Any]) -> WorkingHours:
        """Build from the raw ``GET /inboxes/{id}`` JSON, tolerating nulls and junk.

        Disabled, or enabled without any usable entry, means always open (as the original
        bridge did); a day missing from an otherwise valid list is closed.
        """
        tz = _zone(inbox.get("timezone"))
        raw = inbox.get("working_hours")
        days: dict[int, DaySpec] = {}
        if isinstance(raw, list):
            for entry in raw:
                if not isinstance(entry, Mapping):
                    continue
                day = entry.get("day_of_week")
                if isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 6:
                    days[day] = DaySpec.from_entry(entry)
        enabled = bool(inbox.get("working_hours_enabled"))
        if enabled and not days:
            log.warning("working hours are enabled but the inbox lists none; treating as open")
            enabled = False
        return cls(enabled=enabled, tz=tz, days=days)

    # ------------------------------------------------------------------ queries
    def is_open(self, at: datetime) -> bool:
        """Whether the inbox is open at the aware instant ``at`` (disabled: always)."""
        start = _utc(at)
        constant = self._constant()
        if constant is not None:
            return constant
        day = start.astimezone(self.tz).date()
        return any(s <= start < e for s, e in self._spans(day - 2 * _DAY, day + _DAY))

    def next_change(self, at: datetime) -> datetime | None:
        """The first instant after ``at`` where :meth:`is_open` flips (aware UTC), or None."""
        start = _utc(at)
        if self._constant() is not None:
            return None
        day = start.astimezone(self.tz).date()
        limit = start + _HORIZON
        for s, e in _merge(self._spans(day - 2 * _DAY, day + _HORIZON + 2 * _DAY)):
            change = s if s > start else e if e > start else None
            if change is not None:
                return change if change <= limit else None
        return None

    def next_opening(self, at: datetime) -> datetime | None:
        """The earliest instant ``>= at`` at which the inbox is open (aware UTC).

        That is ``at`` itself when already open, and None when it never opens.
        """
        start = _utc(at)
        if self.is_open(start):
            return start
        return self.next_change(start)

    # ------------------------------------------------------------------ internals
    def _day(self, day_of_week: int) -> DaySpec:
        return self.days.get(day_of_week, DaySpec(closed=True))

    def _constant(self) -> bool | None:
        """True/False when the answer never depends on the time, else None."""
        if not self.enabled:
            return True
        specs = [self._day(d) for d in range(7)]
        if all(s.closed for s in specs):
            return False
        if all(s.all_day for s in specs):
            return True
        return None

    def _resolve(self, wall: datetime) -> datetime:
        """First instant (UTC) at which the local wall clock reads ``wall`` or later."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if first.astimezone(self.tz).replace(tzinfo=None) == wall:
            return first
        # In a gap: fold=1 lands before the jump, fold=0 after it; find the jump itself.
        before = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        return _first_with_offset_of(self.tz, before, first)

    def _spans(self, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
        """Open ``[start, end)`` spans (UTC) of the local dates ``first..last``, in order."""
        day = first
        while day <= last:
            spec = self._day(weekday_sunday_first(day))
            if not spec.closed:
                midnight = datetime.combine(day, time())
                close_day = midnight + _DAY if spec.overnight else midnight
                start = self._resolve(midnight + spec.open_minute * _MINUTE)
                end = self._resolve(close_day + (spec.close_minute + 1) * _MINUTE)
                if start < end:
                    yield start, end
            day += _DAY


def _merge(spans: Iterator[tuple[datetime, datetime]]) -> Iterator[tuple[datetime, datetime]]:
    """Union of spans sorted by start, as disjoint, non-touching spans."""
    current: tuple[datetime, datetime] | None = None
    for s, e in sorted(spans):
        if current is not None and s <= current[1]:
            current = (current[0], max(current[1], e))
            continue
        if current is not None:
            yield current
        current = (s, e)
    if current is not None:
        yield current


def _first_with_offset_of(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """First whole second in ``(lo, hi]`` whose UTC offset is ``hi``'s (tzdata uses seconds)."""
    target = hi.astimezone(tz).utcoffset()
    lo_s, hi_s = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == target:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


__all__ = ["MINUTES_PER_DAY", "DaySpec", "WorkingHours", "weekday_sunday_first"]
