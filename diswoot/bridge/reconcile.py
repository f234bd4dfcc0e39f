"""Lost-webhook reconciliation: agent replies whose webhook never arrived still reach the user.

At start-up and every ``RECONCILE_INTERVAL_SECONDS`` a sweep reads the inbox's changed
conversations from Chatwoot and hands agent replies the bridge has not handled to the webhook's
own idempotent path (:meth:`ReplySink.submit_reply`): a reply that comes both ways is sent once.
A status change no webhook told goes the same way (:meth:`ReplySink.recover_status`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from diswoot.chatwoot.errors import ChatwootError, ChatwootNotFound, ChatwootUnavailable
from diswoot.chatwoot.models import message_type_name, to_epoch
from diswoot.context import Context
from diswoot.store import queries as q

log = logging.getLogger("diswoot.reconcile")

KV_KEY = "reconcile"
QUEUE = "outbound"
LOOKBACK_SECONDS = 7 * 86400
"""The longest window asked for (the first sweep, or after a long downtime)."""
WINDOW_MARGIN_SECONDS = 120
"""Added to the time since the last sweep (clock skew, slow commits)."""
SETTLE_SECONDS = 300.0
GRACE_SECONDS = 15.0
PAGE_AFTER = 100
"""``?after=`` answers at most 100 messages: a full page means ask again."""
PAGE_LATEST = 20
"""No parameter or ``?before=``: at most 20 messages."""
_DISABLED_STATUSES = (401, 403)


class ReplySink(Protocol):
    """What the sweep needs from the outbound bridge."""

    async def submit_reply(
        self,
        *,
        conversation_id: int,
        message_id: int,
        discord_id: str,
        content: str | None,
        attachments: list[dict[str, Any]],
        reply_to: str | None = None,
        template: bool = False,
    ) -> str: ...

    async def route_conversation(
        self, conversation_id: int, identifier: str | None, conversation: Mapping[str, Any]
    ) -> str | None: ...

    async def recover_status(
        self, conversation_id: int, conversation: Mapping[str, Any], *, settled_before: float
    ) -> bool: ...


@dataclass
class SweepReport:
    """What one sweep did."""

    conversations: int = 0
    recovered: int = 0
    statuses: int = 0  # status changes no webhook told (their notices are stored)


def is_deliverable(message: Mapping[str, Any]) -> bool:
    """An agent's public, undeleted reply with something to show (REST message JSON)."""
    try:
        kind = message_type_name(message.get("message_type"))
    except ValueError:
        return False
    attributes = message.get("content_attributes") or {}
    return (
        kind == "outgoing"
        and not message.get("private")
        and not (isinstance(attributes, Mapping) and attributes.get("deleted"))
        and message.get("content_type") != "input_csat"
        and bool((message.get("content") or "").strip() or message.get("attachments"))
    )


class Reconciler:
    """Periodic sweeps of Chatwoot for replies whose webhook was lost."""

    def __init__(
        self,
        ctx: Context,
        sink: ReplySink,
        *,
        grace: float = GRACE_SECONDS,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.ctx = ctx
        self.sink = sink
        self.grace = grace
        self.settle = settle
        self.started_at = ctx.clock()
        self.disabled = False
        self.last_report: SweepReport | None = None

    async def run(self, stop: trio.Event) -> None:
        """Sweep at start-up and every RECONCILE_INTERVAL_SECONDS until ``stop`` (0: never)."""
        interval = self.ctx.cfg.reconcile_interval_seconds
        if interval <= 0:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._loop, interval)
            await stop.wait()
            nursery.cancel_scope.cancel()

    async def _loop(self, interval: float) -> None:
        while not self.disabled:
            try:
                await self.sweep()
            except ChatwootUnavailable as exc:
                log.warning("reconciliation sweep skipped, Chatwoot unavailable: %s", exc)
            except Exception:  # a bug must not end the sweeps (or the daemon)
                log.exception("reconciliation sweep failed")
            await trio.sleep(interval)

    async def sweep(self) -> SweepReport:
        """One pass over the conversations changed since the last one.

        Raises :class:`ChatwootUnavailable` (the next sweep covers the gap).
        """
        report = SweepReport()
        if self.disabled:
            return report
        store, now = self.ctx.store, self.ctx.clock()
        state = dict(await store.call(q.get_value, KV_KEY) or {})
        if "epoch" not in state:
            state["epoch"] = math.floor(now)  # Chatwoot's created_at has whole seconds
            await store.call(q.set_value, KV_KEY, state)
        epoch = float(state["epoch"])
        swept_at = state.get("swept_at")
        window = LOOKBACK_SECONDS
        if isinstance(swept_at, int | float):
            window = min(window, math.ceil(max(0.0, now - swept_at)) + WINDOW_MARGIN_SECONDS)
        try:
            conversations = await self.ctx.chatwoot.list_conversations(updated_within=window)
            for conversation in conversations:
                report.recovered += await self._scan(conversation, epoch, now, report)
                report.conversations += 1
        except ChatwootError as exc:
            if exc.status not in _DISABLED_STATUSES:
                raise
            self.disabled = True
            log.warning(
                "reconciliation disabled: Chatwoot refused to list conversations/messages (%s). "
                "Sweeping for lost webhooks needs a user access token (agent or administrator) "
                "in CHATWOOT_API_TOKEN, not an agent-bot token",
                exc,
            )
            return report
        state["swept_at"] = now
        await store.call(q.set_value, KV_KEY, state)
        if report.recovered:
            self.ctx.metrics.recovered.labels(source="reconcile").inc(report.recovered)
            log.warning(
                "reconciliation recovered %d agent reply(ies) whose webhook never arrived",
                report.recovered,
            )
        if report.statuses:
            self.ctx.metrics.recovered.labels(source="reconcile_status").inc(report.statuses)
            log.warning(
                "reconciliation found %d status change(s) whose webhook never arrived",
                report.statuses,
            )
        self.last_report = report
        return report

    async def _scan(
        self, conversation: Mapping[str, Any], epoch: float, now: float, report: SweepReport
    ) -> int:
        """Submit one conversation's missed replies and move its cursor; the count submitted.
        A status change no webhook told is handed over too (counted in ``report``)."""
        cid = conversation.get("id")
        if not isinstance(cid, int) or conversation.get("inbox_id") not in (
            None,
            self.ctx.cfg.chatwoot_inbox_id,
        ):
            return 0
        sender = _mapping(_mapping(conversation.get("meta")).get("sender"))
        identifier = sender.get("identifier")
        discord_id = await self.sink.route_conversation(
            cid, identifier if isinstance(identifier, str) else None, conversation
        )
        if discord_id is None:
            return 0
        known = await self.ctx.store.conversation(cid)
        cursor = known.reconcile_cursor if known is not None else None
        try:
            if cursor is None:
                messages = await self._since(cid, epoch)
            else:
                messages = await self._after(cid, cursor)
        except ChatwootNotFound:
            return 0  # deleted meanwhile
        missed = self._missed(messages, epoch, now)
        handled = await self.ctx.store.call(
            q.handled_chatwoot_messages, QUEUE, [m["id"] for m in missed]
        )
        recovered = 0
        for message in missed:
            if message["id"] in handled:
                continue
            reply_to = _mapping(message.get("content_attributes")).get("in_reply_to_external_id")
            outcome = await self.sink.submit_reply(
                conversation_id=cid,
                message_id=message["id"],
                discord_id=discord_id,
                content=message.get("content"),
                attachments=[a for a in message.get("attachments") or [] if isinstance(a, dict)],
                reply_to=reply_to if isinstance(reply_to, str) else None,
            )
            if outcome == "stored":
                recovered += 1
                log.info(
                    "recovered reply %d of conversation %d (its webhook never arrived)",
                    message["id"],
                    cid,
                )
        # after the replies: an agent who answers and then resolves is read in that order
        told_by_now = self.ctx.clock() - self.grace  # a younger change's webhook may be coming
        if await self.sink.recover_status(cid, conversation, settled_before=told_by_now):
            report.statuses += 1
        settled_before = max(epoch, now - self.settle)
        settled = [m["id"] for m in messages if (_created(m) or now) < settled_before]
        if settled:
            await self.ctx.store.call(q.set_reconcile_cursor, cid, max(settled))
        elif cursor is None and not messages:
            await self.ctx.store.call(q.set_reconcile_cursor, cid, 0)
        return recovered

    def _missed(
        self, messages: list[dict[str, Any]], epoch: float, now: float
    ) -> list[dict[str, Any]]:
        """Deliverable replies newer than the epoch and not still awaited by webhook, by id."""
        picked = []
        for message in messages:
            created = _created(message)
            if created is None or created < epoch or not is_deliverable(message):
                continue
            if created >= self.started_at and now - created < self.grace:
                continue  # its webhook is probably on the way; the next sweep checks
            picked.append(message)
        return sorted(picked, key=lambda m: int(m["id"]))

    async def _after(self, cid: int, cursor: int) -> list[dict[str, Any]]:
        """Every message with an id above ``cursor`` (pages of 100)."""
        found: list[dict[str, Any]] = []
        after = cursor
        while True:
            page = _valid(await self.ctx.chatwoot.list_messages(cid, after=after))
            found += page
            if len(page) < PAGE_AFTER:
                return found
            after = max(m["id"] for m in page)

    async def _since(self, cid: int, epoch: float) -> list[dict[str, Any]]:
        """First sight: the latest messages, paged back until one predates ``epoch``."""
        page = _valid(await self.ctx.chatwoot.list_messages(cid))
        found = list(page)
        while len(page) >= PAGE_LATEST and all((_created(m) or 0.0) >= epoch for m in page):
            oldest = min(m["id"] for m in page)
            page = _valid(await self.ctx.chatwoot.list_messages(cid, before=oldest))
            found = page + found
        return found


def _valid(page: list[Any]) -> list[dict[str, Any]]:
    return [m for m in page if isinstance(m, dict) and isinstance(m.get("id"), int)]


def _created(message: Mapping[str, Any]) -> float | None:
    try:
        return to_epoch(message.get("created_at"))
    except ValueError:
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
