"""What the bridge tells a user by itself: the greeting, out-of-office, "saved for later".

Each goes out as a notice through the outbound queue, durable and deduplicated by its key: the
greeting once per user, out-of-office for every DM in deny mode and once per ticket in allow
mode, "your message is saved" once per user and Chatwoot outage.
"""

from __future__ import annotations

from datetime import UTC, datetime

from diswoot.bridge import embeds
from diswoot.bridge.outbound import OutboundBridge
from diswoot.chatwoot.hours import WorkingHours
from diswoot.chatwoot.models import InboxConfig
from diswoot.context import Context
from diswoot.store import Job
from diswoot.store import queries as q


class UserNotices:
    """The bridge's own messages to users (see docs/modules.md)."""

    def __init__(self, ctx: Context, outbound: OutboundBridge) -> None:
        self.ctx = ctx
        self.outbound = outbound
        self._told_saved: set[str] = set()  # users told "saved" during the current outage

    def delivered(self, discord_id: str) -> None:
        """A DM of the user reached Chatwoot: a later outage tells them again."""
        self._told_saved.discard(discord_id)

    async def greet(self, discord_id: str, inbox: InboxConfig | None, conversation_id: int) -> None:
        """The greeting, once per user: the inbox's, else GREETING_MESSAGE if enabled."""
        user = await self.ctx.store.user(discord_id)
        if user is None or user.greeted_at is not None:
            return
        text = _greeting_text(self.ctx, inbox)
        if text:
            await self.outbound.send_notice(
                discord_id,
                {"embeds": [embeds.greeting_embed(self.ctx.cfg, text)]},
                dedupe_key=f"greeting:{discord_id}",
                conversation_id=conversation_id,
            )
        await self.ctx.store.call(q.mark_greeted, discord_id, self.ctx.clock())

    async def out_of_office(
        self,
        discord_id: str,
        inbox: InboxConfig | None,
        hours: WorkingHours,
        dedupe_key: str,
        conversation_id: int | None,
    ) -> None:
        """The out-of-office notice: the inbox's text (else the fallback) and next opening."""
        now = datetime.fromtimestamp(self.ctx.clock(), UTC)
        text = (inbox.out_of_office_message if inbox else None) or (
            self.ctx.cfg.outside_hours_fallback_message
        )
        embed = embeds.out_of_office_embed(self.ctx.cfg, text, hours.next_opening(now))
        await self.outbound.send_notice(
            discord_id, {"embeds": [embed]}, dedupe_key=dedupe_key, conversation_id=conversation_id
        )

    async def out_of_office_once(
        self, discord_id: str, inbox: InboxConfig | None, hours: WorkingHours, conversation_id: int
    ) -> None:
        """Allow mode: one out-of-office notice per ticket."""
        conv = await self.ctx.store.conversation(conversation_id)
        if conv is None or conv.ooo_notified_at is not None:
            return
        await self.out_of_office(
            discord_id, inbox, hours, f"ooo:conv:{conversation_id}", conversation_id
        )
        await self.ctx.store.call(q.mark_ooo_notified, conversation_id, self.ctx.clock())

    async def saved_for_later(self, job: Job, error: str) -> None:
        """Chatwoot is down: tell the user once per outage that their message is saved."""
        discord_id = job.lane
        if self.ctx.health.report_chatwoot_failure(error, self.ctx.clock()):
            self._told_saved.clear()  # a new outage
        if discord_id in self._told_saved:
            return
        self._told_saved.add(discord_id)
        await self.outbound.send_notice(
            discord_id,
            {"embeds": [embeds.saved_for_later_embed(self.ctx.cfg)]},
            dedupe_key=f"saved:{job.dedupe_key}",
        )


def _greeting_text(ctx: Context, inbox: InboxConfig | None) -> str | None:
    if inbox is not None and inbox.greeting_enabled and inbox.greeting_message:
        return inbox.greeting_message
    if ctx.cfg.greeting_enabled and ctx.cfg.greeting_message:
        return ctx.cfg.greeting_message
    return None
