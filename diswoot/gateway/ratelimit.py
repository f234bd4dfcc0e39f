"""Per-connection gateway send limiter: 120 sends per sliding 60 s, heartbeats first."""

from __future__ import annotations

from collections import deque

import trio

SEND_LIMIT = 120
SEND_WINDOW = 60.0
PRIORITY_RESERVE = 3


class SendLimiter:
    """A sliding-window limiter on trio's clock.

    Ordinary sends may use `limit - reserve` slots of any window; priority sends (heartbeats) may
    use all `limit`, so a burst of presence updates can never starve heartbeats. Ordinary sends
    queue in FIFO order; priority sends do not queue behind them.
    """

    def __init__(
        self, limit: int = SEND_LIMIT, window: float = SEND_WINDOW, reserve: int = PRIORITY_RESERVE
    ) -> None:
        if not 0 <= reserve < limit:
            raise ValueError("reserve must be smaller than limit")
        self.limit = limit
        self.window = window
        self.reserve = reserve
        self._sent: deque[float] = deque()
        self._fifo = trio.Lock()

    def used(self) -> int:
        """Sends counted in the current window."""
        self._expire(trio.current_time())
        return len(self._sent)

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    async def _take(self, capacity: int) -> None:
        while True:
            now = trio.current_time()
            self._expire(now)
            if len(self._sent) < capacity:
                self._sent.append(now)
                return
            # wait until enough old sends leave the window to free one slot under `capacity`
            await trio.sleep_until(self._sent[len(self._sent) - capacity] + self.window)

    async def acquire(self, *, priority: bool = False) -> None:
        """Wait for a slot, then count one send."""
        if priority:
            await self._take(self.limit)
            return
        async with self._fifo:
            await self._take(self.limit - self.reserve)
