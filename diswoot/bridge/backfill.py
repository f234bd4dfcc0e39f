"""Downtime backfill: DMs sent while the daemon had no gateway session, fetched over REST.

A RESUME replays what the session missed; a fresh session (READY after IDENTIFY: a restart
whose session was gone, a crash, an invalidated session) does not.  So on every READY, for each
user whose DM was active within ``BACKFILL_HOURS`` (0 disables), the DM channel is paged
forward with ``GET /channels/{id}/messages?after=`` from the newest DM id the daemon stored
(never from before the look-back) - pages come newest first, so each is reversed and the next
``after`` is the page's highest id - and the user's own messages are fed, oldest first, through
the normal inbound path (:meth:`InboundBridge.accept_message`), which stores each message id
once: nothing arrives twice, whether it came by replay, by backfill or by both.

Limits: a user who never DMed the bot before has no known DM channel (Discord cannot list a
bot's DM channels), and text commands (``!close``) found in the gap are not run late.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from diswoot.bridge.commands import parse_text_command
from diswoot.context import Context
from diswoot.gateway.events import CHANNEL_TYPE_DM, MessageCreate
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.snowflake import history_after
from diswoot.store import User
from diswoot.store import queries as q

log = logging.getLogger("diswoot.backfill")

PAGE = 100  # Discord's maximum ``limit``
CONCURRENCY = 4  # DM channels paged at once (each has its own rate-limit bucket)
USER_MESSAGE_TYPES = frozenset({0, 19})  # DEFAULT, REPLY
HOUR = 3600.0

Accept = Callable[[MessageCreate], Awaitable[bool]]


@dataclass
class BackfillResult:
    """What one pass did: channels paged, messages seen, DMs newly stored."""

    channels: int = 0
    seen: int = 0
    recovered: int = 0
    failed_channels: int = 0


class Backfill:
    """One backfill pass per fresh session; passes never overlap."""

    def __init__(self, ctx: Context, accept: Accept) -> None:
        self.ctx = ctx
        self._accept = accept
        self._lock = trio.Lock()
        self.last_result: BackfillResult | None = None  # of the latest finished pass

    async def run(self, stop: trio.Event) -> BackfillResult:
        """Fetch and feed what was missed; never raises (it runs beside the event router)."""
        result = BackfillResult()
        hours = self.ctx.cfg.backfill_hours
        if hours <= 0:
            return result
        async with self._lock:  # a second READY waits, then starts from the advanced ids
            try:
                await self._pass(stop, hours, result)
            except Exception:
                log.exception("backfill failed after recovering %d DM(s)", result.recovered)
        if result.recovered:
            self.ctx.metrics.recovered.labels(source="backfill").inc(result.recovered)
        log.info(
            "backfill: %d DM channel(s) checked, %d message(s) seen, %d DM(s) recovered%s",
            result.channels,
            result.seen,
            result.recovered,
            f", {result.failed_channels} channel(s) failed" if result.failed_channels else "",
        )
        self.last_result = result
        return result

    async def _pass(self, stop: trio.Event, hours: int, result: BackfillResult) -> None:
        since = self.ctx.clock() - hours * HOUR
        floor = history_after(datetime.fromtimestamp(since, UTC))
        users = await self.ctx.store.call(q.users_active_since, since)
        limiter = trio.CapacityLimiter(CONCURRENCY)
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(self._channel, user, floor, limiter, stop, result)

    async def _channel(
        self,
        user: User,
        floor: int,
        limiter: trio.CapacityLimiter,
        stop: trio.Event,
        result: BackfillResult,
    ) -> None:
        """Page one DM channel forward from the user's newest stored DM (or the floor)."""
        assert user.dm_channel_id is not None
        after = max(int(user.last_message_id or 0), floor)
        async with limiter:
            result.channels += 1
            try:
                while not stop.is_set():
                    page = await self.ctx.discord.list_messages(
                        user.dm_channel_id, after=str(after), limit=PAGE
                    )
                    result.seen += len(page)
                    for data in reversed(page):  # oldest first
                        if _from_user(data, user.discord_id) and await self._accept(
                            MessageCreate({**data, "channel_type": CHANNEL_TYPE_DM})
                        ):
                            result.recovered += 1
                    if len(page) < PAGE:
                        return
                    after = max(int(m["id"]) for m in page)
            except (DiscordHTTPError, DiscordUnavailable) as exc:
                result.failed_channels += 1
                log.warning("backfill of the DM with user %s failed: %s", user.discord_id, exc)


def _from_user(data: dict[str, Any], discord_id: str) -> bool:
    """A message the user wrote (not ours, not a system message, not a text command)."""
    author = data.get("author") or {}
    if str(author.get("id")) != discord_id or author.get("bot") or data.get("webhook_id"):
        return False
    if int(data.get("type") or 0) not in USER_MESSAGE_TYPES:
        return False
    if data.get("attachments") or data.get("sticker_items"):
        return True
    return parse_text_command(str(data.get("content") or ""), discord_id) is None
