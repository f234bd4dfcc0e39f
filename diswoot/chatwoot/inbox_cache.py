"""The inbox configuration, cached for five minutes and refreshed in the background.

Working hours, timezone, greeting, out-of-office text, CSAT toggle and
lock_to_single_conversation live on the Chatwoot inbox.  The hot path reads
:attr:`InboxCache.current` or awaits :meth:`InboxCache.get`; while :meth:`InboxCache.run`
refreshes the cache every ``ttl`` seconds, neither makes a network call once the cache is warm.
Without the background loop, :meth:`get` fetches when the cache is cold or stale.  A failed
refresh keeps the previous value.
"""

from __future__ import annotations

import logging

import trio

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.chatwoot.models import InboxConfig

log = logging.getLogger("diswoot.inbox")

DEFAULT_TTL = 300.0
RETRY_AFTER_FAILURE = 30.0  # the background loop retries a failed refresh this soon
GET_TIMEOUT = 10.0


class InboxCache:
    def __init__(self, chatwoot: ChatwootClient, *, ttl: float = DEFAULT_TTL) -> None:
        self._chatwoot = chatwoot
        self.ttl = ttl
        self.current: InboxConfig | None = None
        self.fetched_at: float | None = None  # trio time of the last successful fetch
        self.last_error: str | None = None  # why the last refresh failed (None: it worked)
        self.changed = trio.Event()  # set (and replaced) whenever a refresh changed the config
        self._background = False
        self._lock = trio.Lock()

    @property
    def stale(self) -> bool:
        return self.fetched_at is None or trio.current_time() - self.fetched_at >= self.ttl

    async def refresh(self) -> InboxConfig | None:
        """Fetch now; on failure keep the previous value (and say why in the log)."""
        async with self._lock:
            try:
                inbox = await self._chatwoot.get_inbox()
            except (ChatwootUnavailable, ChatwootError) as exc:
                self.last_error = str(exc)
                log.warning("could not refresh the inbox configuration: %s", exc)
                return self.current
            previous, self.current = self.current, inbox
            self.fetched_at, self.last_error = trio.current_time(), None
            if previous is None or previous.raw != inbox.raw:
                self.changed.set()
                self.changed = trio.Event()
            return inbox

    async def get(self) -> InboxConfig | None:
        """The cached config; fetched only when cold, or stale with no background refresh."""
        if self.current is None or (self.stale and not self._background):
            with trio.move_on_after(GET_TIMEOUT):
                return await self.refresh()
        return self.current

    async def run(
        self,
        stop: trio.Event | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Warm the cache (one attempt), then refresh it every ``ttl`` seconds until ``stop``."""
        stop = trio.Event() if stop is None else stop
        self._background = True
        try:
            await self.refresh()
            task_status.started()
            while True:
                retry_soon = self.last_error is not None
                with trio.move_on_after(min(self.ttl, RETRY_AFTER_FAILURE) if retry_soon
                                        else self.ttl):
                    await stop.wait()
                if stop.is_set():
                    return
                await self.refresh()
        finally:
            self._background = False
