"""An agent typing in Chatwoot shows "Bot is typing..." in the user's DM.

Typing is ephemeral, so nothing is stored: :meth:`AgentTyping.start` / :meth:`AgentTyping.stop`
(called from the webhook handler, never block) hand the event to :meth:`AgentTyping.run`, which
keeps one task per
conversation that triggers Discord's indicator (it lasts about 10 s) every ``renew`` seconds
until ``conversation_typing_off``, a delivered reply, or the ``cap``.
"""

from __future__ import annotations

import logging

import trio

from diswoot.context import Context
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable

log = logging.getLogger("diswoot.typing")

RENEW_SECONDS = 8.0
"""Discord's indicator lasts ~10 s; renew a little before it fades."""
CAP_SECONDS = 60.0
"""Stop showing typing this long after the last ``typing_on`` (a lost ``typing_off``)."""
BACKLOG = 64


class AgentTyping:
    """Per-conversation typing indicators in DMs, driven by Chatwoot's typing webhooks."""

    def __init__(
        self, ctx: Context, *, renew: float = RENEW_SECONDS, cap: float = CAP_SECONDS
    ) -> None:
        self.ctx = ctx
        self.renew = renew
        self.cap = cap
        self._tx, self._rx = trio.open_memory_channel[tuple[int, str | None]](BACKLOG)
        self._active: dict[int, trio.CancelScope] = {}

    def start(self, conversation_id: int, discord_id: str) -> None:
        """An agent types in the conversation: show it in ``discord_id``'s DM (or keep it up)."""
        self._send(conversation_id, discord_id)

    def stop(self, conversation_id: int) -> None:
        """The agent stopped typing, or their reply was delivered (which ends the indicator)."""
        self._send(conversation_id, None)

    def _send(self, conversation_id: int, discord_id: str | None) -> None:
        try:
            self._tx.send_nowait((conversation_id, discord_id))
        except (trio.WouldBlock, trio.BrokenResourceError):
            log.debug("typing event for conversation %d dropped", conversation_id)

    @property
    def active(self) -> frozenset[int]:
        """Conversations whose DM currently shows the indicator."""
        return frozenset(self._active)

    async def run(self, stop: trio.Event) -> None:
        """Apply typing events until ``stop``; running indicators end with it.

        The channel stays open, so a supervisor may run this again after a failure.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, nursery)
            await stop.wait()
            nursery.cancel_scope.cancel()

    async def _consume(self, nursery: trio.Nursery) -> None:
        async for conversation_id, discord_id in self._rx:
            scope = self._active.get(conversation_id)
            if discord_id is None:
                if scope is not None:
                    scope.cancel()
                continue
            deadline = trio.current_time() + self.cap
            if scope is not None:
                scope.deadline = deadline  # still typing: extend the cap
                continue
            scope = trio.CancelScope(deadline=deadline)
            self._active[conversation_id] = scope
            nursery.start_soon(self._show, conversation_id, discord_id, scope)

    async def _show(self, conversation_id: int, discord_id: str, scope: trio.CancelScope) -> None:
        try:
            with scope:
                channel_id = await self.ctx.discord.create_dm(discord_id)
                while True:
                    await self.ctx.discord.trigger_typing(channel_id)
                    await trio.sleep(self.renew)
        except (DiscordHTTPError, DiscordUnavailable) as exc:
            log.info("typing indicator for conversation %d stopped: %s", conversation_id, exc)
        finally:
            if self._active.get(conversation_id) is scope:
                del self._active[conversation_id]
