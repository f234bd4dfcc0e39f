"""Chatwoot -> Discord: agent replies and ticket status notices, durably and exactly once.

``accept_webhook`` runs inside Chatwoot's 5-second webhook timeout, so it only parses, filters,
dedupes and stores (one or two SQLite transactions, no network); the ``outbound`` queue then
delivers per conversation, in order.  Replies are idempotent per Chatwoot message id (job dedupe
key, per-part progress, Discord nonces); status changes are deduped against the status the store
already has, so the twin ``conversation_status_changed`` / ``conversation_updated`` events and
the account + inbox webhook duplicates produce one notice.  Agents see the outcome: the
``receipts`` queue marks each reply ``delivered`` or ``failed`` in Chatwoot
(:mod:`diswoot.bridge.receipts`).

Also here: the agent's files are uploaded to the DM (``reply_layout``, ``delivery``); an
agent deleting a delivered reply deletes its DM(s) (``delete`` jobs); a failed reply that an
agent retries in Chatwoot is delivered again (``retry:{id}:{n}`` jobs); agent typing is shown
in the DM (:mod:`diswoot.bridge.agent_typing`); replies whose webhook was lost are found by
the sweep of :mod:`diswoot.bridge.reconcile`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import trio

from diswoot.bridge import embeds
from diswoot.bridge.agent_typing import AgentTyping
from diswoot.bridge.csat import CsatFlow
from diswoot.bridge.delivery import Ending, Undeliverable, deliver_parts
from diswoot.bridge.jobs import Finished, FinishLater, JobQueue, PermanentFailure
from diswoot.bridge.receipts import Receipts
from diswoot.bridge.recent import RecentIds
from diswoot.bridge.reconcile import Reconciler
from diswoot.bridge.reply_layout import discord_id_from_identifier, is_inbox_template, reply_parts
from diswoot.chatwoot.models import (
    ConversationEvent,
    MessageEvent,
    TypingEvent,
    parse_webhook,
)
from diswoot.context import Context
from diswoot.rest.errors import DiscordHTTPError
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.outbound")

RETRY_WINDOW = 86400.0
"""Chatwoot offers Retry on messages younger than a day; older updates never re-deliver."""
DELIVERED_REMEMBERED = 4096  # reply ids kept in memory: their receipt echoes cost no store read
UNKNOWN_MESSAGE = 10008
CLOSED_BY_USER_WINDOW = 3600.0
"""A "user closed it" flag older than this no longer suppresses the resolved notice."""
GATEWAY_POLL_SECONDS = 5.0
_SNOWFLAKE = re.compile(r"[0-9]{15,21}")
_ATTACHMENT_KEYS = ("data_url", "file_type", "content_type", "file_size", "fallback_title")
_SURVEY_UUID = re.compile(r"/survey/responses/([0-9A-Fa-f-]{36})")
_OPEN_REASONS: dict[str, embeds.ReopenReason] = {
    "pending": "picked up",
    "snoozed": "unsnoozed",
    "resolved": "reopened",
}


class OutboundBridge:
    """Chatwoot webhooks in, Discord DMs out; see the module docstring."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = JobQueue(ctx.store, "outbound", self.handle, clock=ctx.clock)
        self.receipts = Receipts(ctx)
        self.csat = CsatFlow(ctx)
        self.extra_queues: list[JobQueue] = [self.csat.queue, self.receipts.queue]
        self.typing = AgentTyping(ctx)
        self.reconciler = Reconciler(ctx, self)
        self.delivered = RecentIds(DELIVERED_REMEMBERED)  # replies delivered lately (ids)
        # reply jobs stored prepared by this process and not run yet: job id -> message id
        # (an agent's deletion meanwhile drops its entries: the run checks the store again)
        self._prepared: dict[int, int] = {}

    # ------------------------------------------------------------------ webhook intake

    async def accept_webhook(self, body: dict[str, Any]) -> str:
        """Store what must be delivered; ``"stored"``, ``"duplicate"`` or ``"ignored"``.

        Raises ``ValueError`` for a known event whose body lacks what it needs (answered 400).
        """
        event = parse_webhook(body)
        cfg = self.ctx.cfg
        if event is None or (event.account_id, event.inbox_id) != (
            cfg.chatwoot_account_id,
            cfg.chatwoot_inbox_id,
        ):
            return "ignored"
        if isinstance(event, MessageEvent):
            return await self._accept_message(event, body)
        if isinstance(event, ConversationEvent):
            return await self._accept_conversation(event, body)
        if isinstance(event, TypingEvent):
            return await self._accept_typing(event)
        return "ignored"

    def is_receipt_echo(self, body: Mapping[str, Any]) -> bool:
        """A ``message_updated`` of a reply this process delivered, and no deletion: the echo
        of its own receipt, which :meth:`accept_webhook` would ignore; known from memory, so
        the webhook fast path answers it without Quart."""
        if body.get("event") != "message_updated":
            return False
        mid = body.get("id")
        if isinstance(mid, bool) or not isinstance(mid, int) or mid not in self.delivered:
            return False
        attributes = body.get("content_attributes")
        if attributes is None:
            return True
        return isinstance(attributes, dict) and not attributes.get("deleted")

    async def _accept_typing(self, event: TypingEvent) -> str:
        """An agent typing (not a private note, not our own contact-typing echo); not stored."""
        if event.is_private or event.is_contact:
            return "ignored"
        conv = await self.ctx.store.conversation(event.conversation_id)
        if conv is None:
            return "ignored"
        if event.on:
            self.typing.start(event.conversation_id, conv.discord_id)
        else:
            self.typing.stop(event.conversation_id)
        return "typing"

    async def _accept_message(self, event: MessageEvent, body: Mapping[str, Any]) -> str:
        if event.private or event.message_type not in ("outgoing", "template"):
            return "ignored"
        if event.event == "message_updated":
            return await self._accept_update(event)
        if event.event != "message_created":
            return "ignored"
        if event.content_type == "input_csat":
            # Chatwoot's own survey link: the bot sends its own button; keep the uuid it names.
            await self._remember_uuid(event)
            return "ignored"
        if event.message_type == "template" and is_inbox_template(
            event.content, self.ctx.inbox.current
        ):
            return "ignored"
        if not (event.content or "").strip() and not event.attachments:
            return "ignored"
        conversation = _mapping(body.get("conversation"))
        discord_id = await self.route_conversation(
            event.conversation_id, event.contact_identifier, conversation
        )
        if discord_id is None:
            log.warning(
                "reply %d in conversation %d has no Discord user (contact identifier %r)",
                event.message_id,
                event.conversation_id,
                event.contact_identifier,
            )
            return "ignored"
        reply_to = event.content_attributes.get("in_reply_to_external_id")
        return await self.submit_reply(
            conversation_id=event.conversation_id,
            message_id=event.message_id,
            discord_id=discord_id,
            content=event.content,
            attachments=event.attachments,
            reply_to=reply_to if isinstance(reply_to, str) else None,
            template=event.message_type == "template",
        )

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
        dedupe_key: str | None = None,
    ) -> str:
        """Store one agent message for delivery (also the entry of the reconciliation sweep).

        ``dedupe_key`` defaults to ``msg:{message_id}``; an agent's Retry uses a fresh one.
        """
        payload = {
            "discord_id": discord_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "content": content,
            "attachments": [
                {key: a.get(key) for key in _ATTACHMENT_KEYS if a.get(key) is not None}
                for a in attachments
            ],
            "reply_to": reply_to if reply_to and _SNOWFLAKE.fullmatch(reply_to) else None,
            "template": template,
            "received_at": self.ctx.clock(),
        }
        key = dedupe_key or f"msg:{message_id}"
        reply = q.JobToAdd(self.queue.name, key, f"conv:{conversation_id}", "reply", payload)
        parts = None if template else reply_parts(payload, upload_limit=self._upload_limit())
        job = await self.ctx.store.call(
            q.accept_reply, reply, message_id, parts, self.ctx.clock()
        )
        if job is None:
            self.queue.note_duplicate()
            return "duplicate"
        if "parts" in job.payload:
            self._prepared[job.id] = message_id
        self.queue.schedule_stored(job)
        return "stored"

    def _upload_limit(self) -> int:
        return self.ctx.cfg.discord_upload_limit_mb * 1024 * 1024

    async def _accept_update(self, event: MessageEvent) -> str:
        """``message_updated``: an agent deleted a reply, or retried one that failed."""
        cid, mid = event.conversation_id, event.message_id
        conv = await self.ctx.store.conversation(cid)
        if conv is None:
            return "ignored"
        if event.deleted:
            for job_id in [j for j, m in self._prepared.items() if m == mid]:
                del self._prepared[job_id]  # its run checks the store for this deletion
            job = await self.queue.submit(
                "delete",
                f"delete:{mid}",
                f"conv:{cid}",
                {"conversation_id": cid, "message_id": mid, "received_at": self.ctx.clock()},
            )
            return "stored" if job is not None else "duplicate"
        if event.external_error or event.message_type != "outgoing":
            return "ignored"  # e.g. our own "failed" receipt coming back
        if not (event.content or "").strip() and not event.attachments:
            return "ignored"
        if event.created_at is None or self.ctx.clock() - event.created_at > RETRY_WINDOW:
            return "ignored"
        return await self._redeliver(event, conv.discord_id)

    async def _redeliver(self, event: MessageEvent, discord_id: str) -> str:
        """Deliver an updated reply that never reached Discord (Retry, or a lost webhook).

        Our own "delivered" receipt comes back as ``message_updated`` too: a reply with a
        DM, or one still queued, is left alone.
        """
        store, mid = self.ctx.store, event.message_id
        if mid in self.delivered:  # our own "delivered" receipt coming back: no store read
            return "ignored"
        links = await store.call(q.links_for_chatwoot, mid)
        if any(link.direction == "out" for link in links):
            return "ignored"
        attempts = await store.call(q.reply_attempts, self.queue.name, mid)
        if any(state == "pending" for _, state in attempts):
            return "duplicate"
        if attempts:
            log.info("agent retried reply %d; delivering it again", mid)
        reply_to = event.content_attributes.get("in_reply_to_external_id")
        return await self.submit_reply(
            conversation_id=event.conversation_id,
            message_id=mid,
            discord_id=discord_id,
            content=event.content,
            attachments=event.attachments,
            reply_to=reply_to if isinstance(reply_to, str) else None,
            dedupe_key=f"retry:{mid}:{len(attempts)}" if attempts else None,
        )

    async def _accept_conversation(self, event: ConversationEvent, body: Mapping[str, Any]) -> str:
        cid = event.conversation_id
        discord_id = await self.route_conversation(cid, event.contact_identifier, body)
        if discord_id is None:
            return "ignored"
        status_change = event.event == "conversation_status_changed" or (
            event.event == "conversation_updated" and "status" in event.changed
        )
        store, now = self.ctx.store, self.ctx.clock()
        if not status_change:
            conv = await store.conversation(cid)
            if conv is not None and conv.status is None:
                await store.call(q.change_conversation_status, cid, event.status, now)
            return "ignored"
        changed, stored_previous, by_user = await store.call(
            q.apply_status_event,
            cid,
            event.status,
            now,
            CLOSED_BY_USER_WINDOW,
            event.last_activity_at,
        )
        # conversation_updated names the previous status; it is a real transition even when our
        # own side (a reopen by a new DM) already stored the new status before the webhook came.
        told = event.previous_status not in (None, event.status)
        if not changed and not told:
            return "duplicate"
        previous = event.previous_status or stored_previous
        payload = {
            "discord_id": discord_id,
            "conversation_id": cid,
            "status": event.status,
            "previous": previous,
            "closed_by_user": by_user,
            "received_at": now,
        }
        # Twin events of one change carry the same updated_at, so they share this key.
        stamp = f"{event.updated_at:.3f}" if event.updated_at is not None else str(time.time_ns())
        key = f"status:{cid}:{event.status}:{stamp}"
        job = await self.queue.submit("status", key, f"conv:{cid}", payload)
        return "stored" if job is not None else "duplicate"

    async def route_conversation(
        self, conversation_id: int, identifier: str | None, conversation: Mapping[str, Any]
    ) -> str | None:
        """The Discord user of a conversation; maps an unknown one by its contact identifier."""
        store = self.ctx.store
        conv = await store.conversation(conversation_id)
        if conv is not None:
            return conv.discord_id
        discord_id = discord_id_from_identifier(identifier)
        if discord_id is None:
            return None
        sender = _mapping(_mapping(conversation.get("meta")).get("sender"))
        contact_id = sender.get("id")
        source_id = _mapping(conversation.get("contact_inbox")).get("source_id")
        await store.call(
            q.adopt_conversation,
            conversation_id,
            discord_id,
            contact_id if isinstance(contact_id, int) else None,
            source_id if isinstance(source_id, str) else None,
            self.ctx.clock(),
        )
        log.info("conversation %d mapped to Discord user %s", conversation_id, discord_id)
        return discord_id

    async def _remember_uuid(self, event: MessageEvent) -> None:
        match = _SURVEY_UUID.search(event.content or "")
        if match:
            await self.ctx.store.call(q.set_conversation_uuid, event.conversation_id, match[1])

    # ------------------------------------------------------------------ notices from others

    async def send_notice(
        self,
        discord_id: str,
        payload: dict[str, Any],
        *,
        dedupe_key: str,
        conversation_id: int | None = None,
    ) -> None:
        """Durably DM ``payload`` (a create-message body), ordered with that conversation."""
        lane = f"conv:{conversation_id}" if conversation_id is not None else f"user:{discord_id}"
        await self.queue.submit(
            "notice",
            dedupe_key,
            lane,
            {
                "discord_id": discord_id,
                "conversation_id": conversation_id,
                "parts": [dict(payload)],
                "kinds": [dedupe_key.split(":", 1)[0]],
                "received_at": self.ctx.clock(),
            },
        )

    async def send_reaction(self, channel_id: str, message_id: str) -> None:
        """Durably add CONFIRM_EMOJI to a user's DM (blank emoji: nothing to do).

        Queued per DM channel rather than awaited in the user's inbound lane, so the next DM
        of that user is not held behind Discord's reaction rate limit.
        """
        job = self.reaction_job(channel_id, message_id)
        if job is not None:
            await self.queue.submit(job.kind, job.dedupe_key, job.lane, job.payload)

    def reaction_job(self, channel_id: str, message_id: str) -> q.JobToAdd | None:
        """The job of :meth:`send_reaction`, for a caller that stores it in its own step."""
        emoji = self.ctx.cfg.confirm_emoji
        if not emoji:
            return None
        payload = {"channel_id": channel_id, "message_id": message_id, "emoji": emoji}
        return q.JobToAdd(
            self.queue.name, f"react:{message_id}", f"chan:{channel_id}", "reaction", payload
        )

    async def _deliver_reaction(self, job: Job) -> FinishLater:
        """Adding a reaction twice changes nothing: the job's end is a deferred write."""
        p = job.payload
        try:
            await self.ctx.discord.add_reaction(p["channel_id"], p["message_id"], p["emoji"])
        except DiscordHTTPError as exc:
            if exc.transient:
                raise
            # e.g. the user deleted the message meanwhile
            log.warning("could not react to DM %s: %s", p["message_id"], exc)
            return FinishLater({"skipped": str(exc)})
        return FinishLater({"reacted": p["emoji"]})

    # ------------------------------------------------------------------ background

    async def start_background(self, nursery: trio.Nursery, stop: trio.Event) -> None:
        """Start the Discord-is-back waker, agent typing and the reconciliation sweeps."""
        nursery.start_soon(self._wake_when_discord_returns, stop)
        nursery.start_soon(self.typing.run, stop)
        nursery.start_soon(self.reconciler.run, stop)

    async def _wake_when_discord_returns(self, stop: trio.Event) -> None:
        """Deliveries waiting out a Discord outage are retried as soon as it is over."""
        was_ready = self.ctx.gateway.state == "ready"
        while not stop.is_set():
            with trio.move_on_after(GATEWAY_POLL_SECONDS):
                await stop.wait()
            ready = self.ctx.gateway.state == "ready"
            if ready and not was_ready and self.queue.depth:
                log.info("Discord is back; retrying %d waiting delivery(ies)", self.queue.depth)
                self.queue.wake()
            was_ready = ready

    # ------------------------------------------------------------------ queue handlers

    async def handle(self, job: Job) -> dict[str, Any] | Finished | FinishLater | None:
        """Deliver one outbound job: reply, status, notice, reaction or delete."""
        if job.kind == "reply":
            return await self._deliver_reply(job)
        if job.kind in ("status", "notice"):
            return await self._deliver_notices(job)
        if job.kind == "reaction":
            return await self._deliver_reaction(job)
        if job.kind == "delete":
            return await self._delete_reply(job)
        raise PermanentFailure(f"unknown outbound job kind {job.kind!r}")

    async def _deliver_reply(self, job: Job) -> dict[str, Any] | Finished:
        p, ctx = job.payload, self.ctx
        cid, mid = int(p["conversation_id"]), int(p["message_id"])
        if self._prepared.pop(job.id, None) is not None:
            hold = None  # prepared when stored, by this process; not deleted since
        elif "parts" not in p:
            if p.get("template") and is_inbox_template(p.get("content"), await ctx.inbox.get()):
                return {"suppressed": "inbox template"}
            parts = reply_parts(p, upload_limit=self._upload_limit())
            # one transaction: not deleted, not delivered by another job; then the parts
            hold = await ctx.store.call(q.prepare_reply, job.id, self.queue.name, mid, p, parts)
        else:
            deleted = await ctx.store.call(q.job_exists, self.queue.name, f"delete:{mid}")
            hold = {"suppressed": "deleted by an agent"} if deleted else None
        if hold is not None:
            return hold
        # the last part's transaction also ends the job and stores the agent's receipt
        result: dict[str, Any] = {"discord_message_ids": p.setdefault("sent", [])}
        receipt = self.receipts.job_for(job, "delivered", None)
        ending = Ending(result, receipt, self.receipts.queue.schedule_stored)
        outcome = await deliver_parts(
            ctx, job, p["discord_id"], chatwoot_message_id=mid, conversation_id=cid, ending=ending
        )
        if isinstance(outcome, Undeliverable):
            log.warning(
                "reply %d of conversation %d cannot reach Discord user %s: %s",
                mid,
                cid,
                p["discord_id"],
                outcome.reason,
            )
            failed = {"failed": outcome.reason}
            return await self.receipts.finish_with(job, failed, "failed", outcome.reason)
        self.typing.stop(cid)
        self.delivered.add(mid)
        ctx.metrics.replies_delivered.inc()
        self._observe_latency(p)
        if isinstance(outcome, Finished):
            return outcome
        return await self.receipts.finish_with(job, result, "delivered", None)

    async def _deliver_notices(self, job: Job) -> dict[str, Any]:
        p, ctx = job.payload, self.ctx
        if "parts" not in p:
            p["parts"], p["kinds"] = await self._status_parts(p)
            await ctx.store.call(q.update_job_payload, job.id, p)
        if not p["parts"]:
            return {"notices": []}
        failure = await deliver_parts(ctx, job, p["discord_id"])
        if isinstance(failure, Undeliverable):
            log.warning("could not DM a notice to %s: %s", p["discord_id"], failure.reason)
            return {"failed": failure.reason}
        for kind in p["kinds"]:
            ctx.metrics.notices_sent.labels(kind=kind).inc()
        self._observe_latency(p)
        return {"notices": p["kinds"], "discord_message_ids": p["sent"]}

    async def _status_parts(self, p: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """The messages announcing a status change (decided once, then stored in the job)."""
        cfg, cid = self.ctx.cfg, int(p["conversation_id"])
        status, previous = p["status"], p.get("previous")
        parts: list[dict[str, Any]] = []
        kinds: list[str] = []
        if status == "resolved":
            if not p.get("closed_by_user"):
                parts.append({"embeds": [embeds.resolved_embed(cfg, cfg.resolved_message)]})
                kinds.append("resolved")
            if await self._csat_wanted(cid):
                parts.append(embeds.csat_prompt(cfg, cid))
                kinds.append("csat_prompt")
        elif status == "open" and previous in _OPEN_REASONS:
            reason = _OPEN_REASONS[previous]
            parts.append(
                {"embeds": [embeds.reopened_embed(cfg, cfg.reopened_message, reason=reason)]}
            )
            kinds.append(reason.replace(" ", "_"))
        elif status in ("snoozed", "pending"):
            text = cfg.snoozed_message if status == "snoozed" else cfg.pending_message
            if text.strip():
                parts.append({"embeds": [embeds.status_notice_embed(cfg, status, text)]})
                kinds.append(status)
        return parts, kinds

    async def _csat_wanted(self, conversation_id: int) -> bool:
        """CSAT on in CSAT_ENABLED and on the inbox, and this conversation not rated yet."""
        if not self.ctx.cfg.csat_enabled:
            return False
        inbox = await self.ctx.inbox.get()
        if inbox is None or not inbox.csat_survey_enabled:
            return False
        return await self.ctx.store.call(q.get_csat, conversation_id) is None

    def _observe_latency(self, p: Mapping[str, Any]) -> None:
        received = p.get("received_at")
        if isinstance(received, int | float):
            latency = max(0.0, self.ctx.clock() - received)
            self.ctx.metrics.delivery_latency.labels("outbound").observe(latency)

    async def _delete_reply(self, job: Job) -> dict[str, Any]:
        """An agent deleted a reply in Chatwoot: delete the DM(s) that carried it."""
        mid = int(job.payload["message_id"])
        links = await self.ctx.store.call(q.links_for_chatwoot, mid)
        deleted: list[str] = []
        for link in (lk for lk in links if lk.direction == "out"):
            try:
                await self.ctx.discord.delete_message(
                    link.discord_channel_id, link.discord_message_id
                )
            except DiscordHTTPError as exc:
                if exc.transient:
                    raise
                if exc.code != UNKNOWN_MESSAGE:  # 10008: the user's client deleted it already
                    log.warning("could not delete DM %s: %s", link.discord_message_id, exc)
                    continue
            deleted.append(link.discord_message_id)
        if deleted:
            log.info("agent deleted reply %d; deleted %d DM(s)", mid, len(deleted))
        return {"deleted": deleted}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
