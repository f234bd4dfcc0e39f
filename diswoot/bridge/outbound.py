"""Chatwoot -> Discord: agent replies and ticket status notices, durably and exactly once.

``accept_webhook`` runs inside Chatwoot's 5-second webhook timeout, so it only parses, filters,
dedupes and stores (one or two SQLite transactions, no network); the ``outbound`` queue then
delivers per conversation, in order.  Replies are idempotent per Chatwoot message id (job dedupe
key, per-part progress, Discord nonces); status changes are deduped against the status the store
already has, so the twin ``conversation_status_changed`` / ``conversation_updated`` events and
the account + inbox webhook duplicates produce one notice.  Agents see the outcome: the
``receipts`` queue marks each reply ``delivered`` or ``failed`` in Chatwoot.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import trio

from diswoot.bridge import embeds
from diswoot.bridge.chunking import chunk_text
from diswoot.bridge.csat import CsatFlow
from diswoot.bridge.delivery import deliver_parts
from diswoot.bridge.jobs import JobQueue, PermanentFailure, RetryLater
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.chatwoot.models import (
    ConversationEvent,
    InboxConfig,
    MessageEvent,
    parse_webhook,
)
from diswoot.context import Context
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.outbound")

DISCORD_MESSAGE_LIMIT = 2000
CLOSED_BY_USER_WINDOW = 3600.0
"""A "user closed it" flag older than this no longer suppresses the resolved notice."""
GATEWAY_POLL_SECONDS = 5.0
_IDENTIFIER = re.compile(r"discord:([0-9]{15,21})")
_SNOWFLAKE = re.compile(r"[0-9]{15,21}")
_SURVEY_UUID = re.compile(r"/survey/responses/([0-9A-Fa-f-]{36})")
_OPEN_REASONS: dict[str, embeds.ReopenReason] = {
    "pending": "picked up",
    "snoozed": "unsnoozed",
    "resolved": "reopened",
}


def discord_id_from_identifier(identifier: str | None) -> str | None:
    """``"discord:80351110224678912"`` -> ``"80351110224678912"``; None for anything else."""
    match = _IDENTIFIER.fullmatch(identifier or "")
    return match.group(1) if match else None


def _normalise(text: str) -> str:
    """Text as Chatwoot's webhook normaliser leaves it (no hard-break backslashes, no padding)."""
    lines = (line.rstrip().removesuffix("\\").rstrip() for line in text.strip().splitlines())
    return "\n".join(lines).strip()


def is_inbox_template(content: str | None, inbox: InboxConfig | None) -> bool:
    """True when ``content`` is the inbox's greeting or out-of-office text."""
    if not content or inbox is None:
        return False
    text = _normalise(content)
    return any(
        template and _normalise(template) == text
        for template in (inbox.greeting_message, inbox.out_of_office_message)
    )


def reply_parts(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Discord messages carrying one agent reply: chunks of at most 2,000 characters.

    Attachments are linked by their permanent ``data_url`` after the text.
    """
    text = (payload.get("content") or "").strip()
    links = [a["data_url"] for a in payload.get("attachments", []) if a.get("data_url")]
    if links:
        text = "\n".join([text, *links]) if text else "\n".join(links)
    parts: list[dict[str, Any]] = [
        {"content": chunk} for chunk in chunk_text(text, DISCORD_MESSAGE_LIMIT) if chunk.strip()
    ]
    reply_to = payload.get("reply_to")
    if parts and reply_to:
        parts[0]["message_reference"] = {"message_id": reply_to, "fail_if_not_exists": False}
    return parts


class OutboundBridge:
    """Chatwoot webhooks in, Discord DMs out; see the module docstring."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = JobQueue(ctx.store, "outbound", self.handle, clock=ctx.clock)
        self.receipts = JobQueue(ctx.store, "receipts", self._send_receipt, clock=ctx.clock)
        self.csat = CsatFlow(ctx)
        self.extra_queues: list[JobQueue] = [self.csat.queue, self.receipts]

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
        return "ignored"

    async def _accept_message(self, event: MessageEvent, body: Mapping[str, Any]) -> str:
        if (
            event.event != "message_created"
            or event.private
            or event.message_type not in ("outgoing", "template")
        ):
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
        discord_id = await self._route(
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
    ) -> str:
        """Store one agent message for delivery (also the entry of the reconciliation sweep)."""
        payload = {
            "discord_id": discord_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "content": content,
            "attachments": [
                {"data_url": a.get("data_url"), "file_type": a.get("file_type")}
                for a in attachments
            ],
            "reply_to": reply_to if reply_to and _SNOWFLAKE.fullmatch(reply_to) else None,
            "template": template,
            "received_at": self.ctx.clock(),
        }
        job = await self.queue.submit(
            "reply", f"msg:{message_id}", f"conv:{conversation_id}", payload
        )
        return "stored" if job is not None else "duplicate"

    async def _accept_conversation(self, event: ConversationEvent, body: Mapping[str, Any]) -> str:
        cid = event.conversation_id
        discord_id = await self._route(cid, event.contact_identifier, body)
        if discord_id is None:
            return "ignored"
        status_change = event.event == "conversation_status_changed" or (
            event.event == "conversation_updated" and "status" in event.changed
        )
        store, now = self.ctx.store, self.ctx.clock()
        if not status_change:
            conv = await store.call(q.get_conversation, cid)
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

    async def _route(
        self, conversation_id: int, identifier: str | None, conversation: Mapping[str, Any]
    ) -> str | None:
        """The Discord user of a conversation; maps an unknown one by its contact identifier."""
        store = self.ctx.store
        conv = await store.call(q.get_conversation, conversation_id)
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
        emoji = self.ctx.cfg.confirm_emoji
        if not emoji:
            return
        await self.queue.submit(
            "reaction",
            f"react:{message_id}",
            f"chan:{channel_id}",
            {"channel_id": channel_id, "message_id": message_id, "emoji": emoji},
        )

    async def _deliver_reaction(self, job: Job) -> dict[str, Any]:
        p = job.payload
        try:
            await self.ctx.discord.add_reaction(p["channel_id"], p["message_id"], p["emoji"])
        except DiscordHTTPError as exc:
            if exc.permanent:  # e.g. the user deleted the message meanwhile
                log.warning("could not react to DM %s: %s", p["message_id"], exc)
                return {"skipped": str(exc)}
            raise RetryLater(str(exc)) from None
        except DiscordUnavailable as exc:
            raise RetryLater(str(exc)) from None
        return {"reacted": p["emoji"]}

    # ------------------------------------------------------------------ background

    async def start_background(self, nursery: trio.Nursery, stop: trio.Event) -> None:
        """Start the task that retries waiting deliveries when the gateway is back."""
        nursery.start_soon(self._wake_when_discord_returns, stop)

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

    async def handle(self, job: Job) -> dict[str, Any] | None:
        """Deliver one outbound job (``reply``, ``status`` or ``notice``)."""
        if job.kind == "reply":
            return await self._deliver_reply(job)
        if job.kind in ("status", "notice"):
            return await self._deliver_notices(job)
        if job.kind == "reaction":
            return await self._deliver_reaction(job)
        raise PermanentFailure(f"unknown outbound job kind {job.kind!r}")

    async def _deliver_reply(self, job: Job) -> dict[str, Any]:
        p, ctx = job.payload, self.ctx
        cid, mid = int(p["conversation_id"]), int(p["message_id"])
        if "parts" not in p:
            if p.get("template") and is_inbox_template(p.get("content"), await ctx.inbox.get()):
                return {"suppressed": "inbox template"}
            links = await ctx.store.call(q.links_for_chatwoot, mid)
            if any(link.direction == "out" for link in links):
                return {"already_delivered": [link.discord_message_id for link in links]}
            p["parts"] = reply_parts(p)
            await ctx.store.call(q.update_job_payload, job.id, p)
        failure = await deliver_parts(
            ctx, job, p["discord_id"], chatwoot_message_id=mid, conversation_id=cid
        )
        if failure is not None:
            log.warning(
                "reply %d of conversation %d cannot reach Discord user %s: %s",
                mid,
                cid,
                p["discord_id"],
                failure.reason,
            )
            await self._queue_receipt(cid, mid, "failed", failure.reason)
            return {"failed": failure.reason}
        await self._queue_receipt(cid, mid, "delivered", None)
        ctx.metrics.replies_delivered.inc()
        self._observe_latency(p)
        return {"discord_message_ids": p["sent"]}

    async def _deliver_notices(self, job: Job) -> dict[str, Any]:
        p, ctx = job.payload, self.ctx
        if "parts" not in p:
            p["parts"], p["kinds"] = await self._status_parts(p)
            await ctx.store.call(q.update_job_payload, job.id, p)
        if not p["parts"]:
            return {"notices": []}
        failure = await deliver_parts(ctx, job, p["discord_id"])
        if failure is not None:
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

    # ------------------------------------------------------------------ receipts for agents

    async def _queue_receipt(
        self, conversation_id: int, message_id: int, status: str, error: str | None
    ) -> None:
        await self.receipts.submit(
            "receipt",
            f"receipt:{message_id}",
            f"conv:{conversation_id}",
            {
                "conversation_id": conversation_id,
                "message_id": message_id,
                "status": status,
                "error": error,
            },
        )

    async def _send_receipt(self, job: Job) -> dict[str, Any]:
        """Mark the Chatwoot message delivered/failed; a failure without that API -> a note."""
        p, chatwoot = job.payload, self.ctx.chatwoot
        cid, mid, status, error = p["conversation_id"], p["message_id"], p["status"], p["error"]
        try:
            await chatwoot.update_message_status(cid, mid, status, external_error=error)
            return {"status": status}
        except ChatwootUnavailable as exc:
            raise RetryLater(str(exc)) from exc
        except ChatwootError as exc:
            if status != "failed":
                log.info("could not mark Chatwoot message %d %s: %s", mid, status, exc)
                return {"skipped": exc.status}
            log.warning(
                "could not mark Chatwoot message %d failed (%s); adding a private note", mid, exc
            )
        note = f"⚠️ This reply was not delivered to the user on Discord. {error}"
        try:
            await chatwoot.create_message(cid, content=note, message_type="outgoing", private=True)
        except ChatwootUnavailable as exc:
            raise RetryLater(str(exc)) from exc
        except ChatwootError as exc:
            raise PermanentFailure(
                f"could not tell agents that message {mid} was not delivered: {exc}"
            ) from exc
        return {"status": status, "private_note": True}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
