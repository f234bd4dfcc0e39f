"""Downtime backfill: DMs, text commands and edits made while the daemon had no gateway session.

On every READY (a fresh session: Discord replays nothing) recently active users' DM channels
are paged over REST; what was missed goes through the live paths, keyed as live events are, so
nothing is stored or run twice, and nothing older than a user's newest stored DM is forwarded.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import trio

from diswoot.bridge.commands import parse_text_command
from diswoot.bridge.jobs import JobQueue
from diswoot.context import Context
from diswoot.gateway.events import CHANNEL_TYPE_DM, MessageCreate, MessageUpdate
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.snowflake import history_after
from diswoot.store import User
from diswoot.store import queries as q

log = logging.getLogger("diswoot.backfill")

PAGE = 100  # Discord's maximum ``limit``
CONCURRENCY = 4  # DM channels paged at once (each has its own rate-limit bucket)
USER_MESSAGE_TYPES = frozenset({0, 19})  # DEFAULT, REPLY
HOUR = 3600.0
DM, COMMAND = "dm", "command"


@dataclass
class BackfillResult:
    """What one pass did: channels paged, messages seen, DMs newly stored, text commands
    queued, edits newly stored."""

    channels: int = 0
    seen: int = 0
    recovered: int = 0
    failed_channels: int = 0
    commands: int = 0
    edits: int = 0


class DmIntake(Protocol):
    """Where recovered messages go: the inbound bridge's live entry points and its queue."""

    queue: JobQueue

    async def accept_message(self, event: MessageCreate) -> bool: ...

    async def accept_command(self, event: MessageCreate, *, run_now: bool) -> bool: ...

    async def accept_edit(self, event: MessageUpdate) -> bool: ...


class Backfill:
    """One backfill pass per fresh session; passes never overlap."""

    def __init__(self, ctx: Context, inbound: DmIntake) -> None:
        self.ctx = ctx
        self._inbound = inbound
        self._lock = trio.Lock()
        self.last_result: BackfillResult | None = None  # of the latest finished pass

    async def run(self, stop: trio.Event) -> BackfillResult:
        """Fetch and feed what was missed; never raises (it runs beside the event router)."""
        result = BackfillResult()
        hours = self.ctx.cfg.backfill_hours
        if hours <= 0:
            return result
        async with self._lock:  # a second READY waits; what the first stored is not redone
            try:
                await self._pass(stop, hours, result)
            except Exception:
                log.exception("backfill failed after recovering %d DM(s)", result.recovered)
        if result.recovered:
            self.ctx.metrics.recovered.labels(source="backfill").inc(result.recovered)
        log.info(
            "backfill: %d DM channel(s) checked, %d message(s) seen, %d DM(s) recovered, "
            "%d command(s) queued, %d edit(s) recovered%s",
            result.channels,
            result.seen,
            result.recovered,
            result.commands,
            result.edits,
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
        """Page one DM channel forward from the look-back floor; see docs/modules.md."""
        assert user.dm_channel_id is not None
        newest = int(user.last_message_id or 0)  # as of this pass: what is older was handled
        after = floor
        async with limiter:
            result.channels += 1
            try:
                while not stop.is_set():
                    page = await self.ctx.discord.list_messages(
                        user.dm_channel_id, after=str(after), limit=PAGE
                    )
                    result.seen += len(page)
                    for data in reversed(page):  # oldest first
                        await self._message(data, user.discord_id, newest, result)
                    if len(page) < PAGE:
                        return
                    after = max(int(m["id"]) for m in page)
            except (DiscordHTTPError, DiscordUnavailable) as exc:
                result.failed_channels += 1
                log.warning("backfill of the DM with user %s failed: %s", user.discord_id, exc)

    async def _message(
        self, data: dict[str, Any], discord_id: str, newest: int, result: BackfillResult
    ) -> None:
        """One message of the history: a DM or command to store, or an edit to note."""
        kind = user_message_kind(data, discord_id)
        if kind is None:
            return
        event = {**data, "channel_type": CHANNEL_TYPE_DM}
        inbound = self._inbound
        if int(data["id"]) > newest:  # stored as it is now: an edit note would repeat it
            if kind == COMMAND:
                if await inbound.accept_command(MessageCreate(event), run_now=False):
                    result.commands += 1
                    return
            elif await inbound.accept_message(MessageCreate(event)):
                result.recovered += 1
                return
        if not data.get("edited_timestamp"):
            return
        if not await self.ctx.store.call(_stored_dm, inbound.queue.name, str(data["id"])):
            return  # never stored (e.g. sent before the bridge was installed)
        if await inbound.accept_edit(MessageUpdate(event)):
            result.edits += 1


def user_message_kind(data: dict[str, Any], discord_id: str) -> str | None:
    """``"dm"``, ``"command"`` (``!close``... without files), or None: not the user's own
    message (ours, a webhook's, a system message)."""
    author = data.get("author") or {}
    if str(author.get("id")) != discord_id or author.get("bot") or data.get("webhook_id"):
        return None
    if int(data.get("type") or 0) not in USER_MESSAGE_TYPES:
        return None
    if data.get("attachments") or data.get("sticker_items"):
        return DM
    if parse_text_command(str(data.get("content") or ""), discord_id) is not None:
        return COMMAND
    return DM


def _stored_dm(db: sqlite3.Connection, queue: str, message_id: str) -> bool:
    """The bridge stored this message before: forwarded (an inbound link) or still queued."""
    links = q.links_for_discord(db, message_id)
    return any(link.direction == "in" for link in links) or q.job_exists(db, queue, message_id)
