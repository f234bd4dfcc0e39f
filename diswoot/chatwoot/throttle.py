"""Chatwoot's global rate limit, respected from our side (pure bookkeeping, wall clock).

Self-hosted Chatwoot throttles ``RACK_ATTACK_LIMIT`` (default 3,000) requests per IP in fixed
windows aligned to the epoch (rack-attack), and a throttled request gets a bare 429 with no
``Retry-After`` (chatwoot-api.md §5).  After a 429 nothing more is sent until the server's next
window (its ``Date`` header tells its clock), and the number of requests that fitted becomes
the budget of the following windows, growing again while it is never exceeded: a backlog then
drains at the cap with a 429 or so per window instead of a retry storm.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

RACK_ATTACK_PERIOD = 60.0
"""Chatwoot's global throttle counts per minute (config/initializers/rack_attack.rb)."""
BOUNDARY_MARGIN = 1.0
"""Seconds past the server's window boundary before sending again (its Date has 1 s steps)."""


DATE_RESOLUTION = 1.0


class FixedWindowThrottle:
    """When the next Chatwoot request may go; see the module docstring."""

    def __init__(
        self, period: float = RACK_ATTACK_PERIOD, wall: Callable[[], float] = time.time
    ) -> None:
        self.period = period
        self.margin = BOUNDARY_MARGIN
        self._wall = wall
        self._offset = 0.0  # server clock - our clock, from the Date of a 429
        self._window = -1
        self._sent = 0  # requests sent in ``_window``
        self._accepted = 0  # ... and answered with anything but a 429
        self._blocked = -1  # a window known to be exhausted
        self.budget: int | None = None  # requests that fitted in the last exhausted window
        self.throttled = 0  # 429s seen

    def _server_window(self) -> tuple[int, float]:
        """The server's current window and the seconds (ours) until its next one."""
        now = self._wall() + self._offset
        window = math.floor(now / self.period)
        return window, (window + 1) * self.period - now + self.margin

    def _enter(self, window: int) -> None:
        if window == self._window:
            return
        full = self.budget is not None and self._sent >= self.budget
        if full and self._window != self._blocked and self.budget is not None:
            self.budget += max(1, self.budget // 20)  # the whole budget fitted: probe up
        self._window, self._sent, self._accepted = window, 0, 0

    def delay(self) -> float:
        """Seconds to wait before the next request (0: go now, and it is counted)."""
        window, until_next = self._server_window()
        self._enter(window)
        if window == self._blocked or (self.budget is not None and self._sent >= self.budget):
            return until_next
        self._sent += 1
        return 0.0

    def accepted(self) -> None:
        """A request was answered with anything but a 429: it fitted in the window."""
        window, _ = self._server_window()
        self._enter(window)
        self._accepted += 1
        if window == self._blocked and self.budget is not None:
            self.budget = max(self.budget, self._accepted)  # answered late, still fitted

    def rate_limited(self, date_header: str | None, *, block: bool = True) -> float:
        """A 429 arrived: block the rest of the server's window; seconds until it ends.

        ``block=False``: a per-endpoint throttle (same windows), other requests may go on.
        """
        self.throttled += 1
        server_now = _parse_date(date_header)
        if server_now is not None:
            # Date has whole seconds: an offset within that resolution is noise
            offset = server_now + 0.5 - self._wall()
            self._offset = offset if abs(offset) > DATE_RESOLUTION else 0.0
        window, until_next = self._server_window()
        self._enter(window)
        if block and window != self._blocked:
            self._blocked = window
            self.budget = max(1, self._accepted)
        return until_next


def _parse_date(value: str | None) -> float | None:
    """Seconds since the epoch from an HTTP ``Date`` header (None when absent or bad)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
