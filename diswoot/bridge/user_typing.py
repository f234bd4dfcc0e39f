"""The user typing in the DM, shown to agents as the contact typing in Chatwoot."""

from __future__ import annotations

import logging
import math

import trio

from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.context import Context
from diswoot.gateway.events import TypingStart

log = logging.getLogger("diswoot.typing")

TYPING_RENEW = 8.0  # at most one "on" per user this often
TYPING_OFF_AFTER = 10.0  # Discord's typing indicator lasts 10 s
TYPING_DISABLE = 900.0  # after a 401/403/404 (a Chatwoot without the public API)


class TypingRelay:
    """Shows a user typing in their DM to the agents (Chatwoot's public ``toggle_typing``).

    Coalesced per user: "on" at the first TYPING_START and again at most every
    ``TYPING_RENEW`` seconds while they keep coming, "off" ``TYPING_OFF_AFTER`` seconds after
    the last one (or when the DM arrives).  Best effort: users without a conversation are
    skipped, a Chatwoot that refuses the public API (401/403/404) disables it for a while.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._nursery: trio.Nursery | None = None
        self._last: dict[str, float] = {}  # user -> trio time of their newest typing event
        self._wake: dict[str, trio.Event] = {}
        self._disabled_until = -math.inf
        self._told_disabled = False
        self.renew_after = TYPING_RENEW
        self.off_after = TYPING_OFF_AFTER

    @property
    def disabled(self) -> bool:
        """True for a while after Chatwoot refused the public typing API."""
        return trio.current_time() < self._disabled_until

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the relay tasks until ``stop``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await stop.wait()
            self._nursery = None
            nursery.cancel_scope.cancel()

    def user_typing(self, event: TypingStart) -> None:
        """A TYPING_START in a DM (sync, never blocks)."""
        if self._nursery is None or self.disabled:
            return
        user_id = event.user_id
        fresh = user_id not in self._last
        self._last[user_id] = trio.current_time()
        if fresh:
            self._wake[user_id] = trio.Event()
            self._nursery.start_soon(self._relay, user_id, name="typing")

    def message_sent(self, user_id: str) -> None:
        """The user's DM arrived: their typing is over."""
        if user_id in self._last:
            self._last[user_id] = -math.inf
            self._wake[user_id].set()

    async def _relay(self, user_id: str) -> None:
        try:
            target = await self._target(user_id)
            if target is None or not await self._toggle(target, on=True):
                return
            on_at = trio.current_time()
            while True:
                last = self._last[user_id]
                off_at = last + self.off_after
                wake_at = off_at if last <= on_at else min(off_at, on_at + self.renew_after)
                wake = self._wake[user_id]
                with trio.move_on_at(wake_at):
                    await wake.wait()
                if wake.is_set():
                    self._wake[user_id] = trio.Event()
                now, last = trio.current_time(), self._last[user_id]
                if now >= last + self.off_after:
                    break
                if last > on_at and now >= on_at + self.renew_after:
                    on_at = now
                    if not await self._toggle(target, on=True):
                        return
            await self._toggle(target, on=False)
        finally:
            self._last.pop(user_id, None)
            self._wake.pop(user_id, None)

    async def _target(self, user_id: str) -> tuple[str, str, int] | None:
        """(inbox_identifier, source_id, conversation_id), or None when there is none yet."""
        inbox = self.ctx.inbox.current
        if inbox is None or not inbox.inbox_identifier:
            return None
        user = await self.ctx.store.user(user_id)
        if user is None or not user.source_id or user.conversation_id is None:
            return None
        return inbox.inbox_identifier, user.source_id, user.conversation_id

    async def _toggle(self, target: tuple[str, str, int], *, on: bool) -> bool:
        """One toggle_typing call; False when it failed (and the relay should stop)."""
        try:
            await self.ctx.chatwoot.toggle_typing_as_contact(*target, on)
        except ChatwootUnavailable as exc:
            log.debug("typing not shown: %s", exc)
            return False
        except ChatwootError as exc:
            if exc.status in (401, 403, 404):
                self._disabled_until = trio.current_time() + TYPING_DISABLE
                if not self._told_disabled:
                    self._told_disabled = True
                    log.info(
                        "Chatwoot refused the public toggle_typing API (%s); user typing is "
                        "not shown to agents for the next %d min",
                        exc.status,
                        TYPING_DISABLE // 60,
                    )
            else:
                log.warning("typing not shown: %s", exc)
            return False
        return True
