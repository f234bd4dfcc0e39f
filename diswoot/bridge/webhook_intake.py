"""Chatwoot webhooks in: what the outbound bridge must deliver, parsed, filtered and stored.

:meth:`WebhookIntake.accept_webhook` runs inside Chatwoot's 5-second webhook timeout, so it only
parses, filters, dedupes and stores (no network) on the ``outbound`` queue: an accepted webhook
is stored before Chatwoot gets its answer.  :mod:`diswoot.bridge.outbound` delivers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from diswoot.bridge.agent_typing import AgentTyping
from diswoot.bridge.jobs import JobQueue
from diswoot.bridge.recent import RecentIds
from diswoot.bridge.reply_layout import (
    discord_id_from_identifier,
    is_inbox_template,
    reply_parts,
    upload_limit,
)
from diswoot.chatwoot.models import (
    ConversationEvent,
    MessageEvent,
    TypingEvent,
    parse_webhook,
    to_epoch,
)
from diswoot.context import Context
from diswoot.store import queries as q

log = logging.getLogger("diswoot.outbound")

CONVERSATION_STATUSES = frozenset({"open", "resolved", "pending", "snoozed"})

RETRY_WINDOW = 86400.0
"""Chatwoot offers Retry on messages younger than a day; older updates never re-deliver."""
CLOSED_BY_USER_WINDOW = 3600.0
"""A "user closed it" flag older than this no longer suppresses the resolved notice."""
_SNOWFLAKE = re.compile(r"[0-9]{15,21}")
_ATTACHMENT_KEYS = ("data_url", "file_type", "content_type", "file_size", "fallback_title")
_SURVEY_UUID = re.compile(r"/survey/responses/([0-9A-Fa-f-]{36})")


class WebhookIntake:
    """Stores what Chatwoot's webhooks ask the outbound bridge to deliver.

    Shares with the bridge its ``queue``, the agent-typing relay, the ids of replies delivered
    lately (``delivered``: their receipts' echoes) and ``prepared`` (reply jobs stored already
    cut into messages, by job id), which the delivery reads and this side fills.
    """

    def __init__(
        self,
        ctx: Context,
        queue: JobQueue,
        typing: AgentTyping,
        delivered: RecentIds,
        prepared: dict[int, int],
        withdrawn: RecentIds,
    ) -> None:
        self.ctx = ctx
        self.queue = queue
        self.typing = typing
        self.delivered = delivered
        self._prepared = prepared
        self._withdrawn = withdrawn

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
        parts = None if template else reply_parts(payload, upload_limit=upload_limit(self.ctx.cfg))
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

    async def _accept_update(self, event: MessageEvent) -> str:
        """``message_updated``: an agent deleted a reply, or retried one that failed."""
        cid, mid = event.conversation_id, event.message_id
        conv = await self.ctx.store.conversation(cid)
        if conv is None:
            return "ignored"
        if event.deleted:
            self._withdrawn.add(mid)  # a send waiting for its turn (a rate limit) is dropped
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
        applied = await store.call(
            q.apply_status_event,
            cid,
            event.status,
            now,
            CLOSED_BY_USER_WINDOW,
            event.last_activity_at,
            event.updated_at,
        )
        if applied is None:
            log.info(
                "conversation %d: %s (%s) is older than the status already applied; ignored",
                cid, event.event, event.status,
            )
            return "ignored"
        changed, stored_previous, by_user = applied
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

    async def recover_status(
        self, conversation_id: int, conversation: Mapping[str, Any], *, settled_before: float
    ) -> bool:
        """A status the sweep read from Chatwoot (REST shape) that no webhook brought: handled as
        a ``conversation_status_changed`` whose webhook was lost; True when a notice was stored.

        Only for a conversation whose status the bridge knew, and only when its ``updated_at``
        is before ``settled_before`` (a webhook may still be on its way); an older state than the
        last status event applied is ignored there, as for a webhook.
        """
        status, raw_updated = conversation.get("status"), conversation.get("updated_at")
        try:
            updated_at = to_epoch(raw_updated)
            last_activity_at = to_epoch(conversation.get("last_activity_at"))
        except ValueError:
            return False
        if status not in CONVERSATION_STATUSES or updated_at is None:
            return False
        known = await self.ctx.store.conversation(conversation_id)
        if known is None or known.status in (None, status) or updated_at >= settled_before:
            return False
        event = ConversationEvent(
            event="conversation_status_changed",
            conversation_id=conversation_id,
            account_id=self.ctx.cfg.chatwoot_account_id,
            inbox_id=self.ctx.cfg.chatwoot_inbox_id,
            status=status,
            previous_status=None,
            contact_identifier=None,
            last_activity_at=last_activity_at,
            updated_at=updated_at,
            uuid=None,
        )
        outcome = await self._accept_conversation(event, conversation)
        if outcome == "stored":
            log.info(
                "conversation %d is %s in Chatwoot, which no webhook told (was %s)",
                conversation_id, status, known.status,
            )
        return outcome == "stored"

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
        source_id = _source_id(conversation)
        await store.call(
            q.adopt_conversation,
            conversation_id,
            discord_id,
            contact_id if isinstance(contact_id, int) else None,
            source_id,
            self.ctx.clock(),
        )
        log.info("conversation %d mapped to Discord user %s", conversation_id, discord_id)
        return discord_id

    async def _remember_uuid(self, event: MessageEvent) -> None:
        match = _SURVEY_UUID.search(event.content or "")
        if match:
            await self.ctx.store.call(q.set_conversation_uuid, event.conversation_id, match[1])


def _source_id(conversation: Mapping[str, Any]) -> str | None:
    """The contact_inbox's source_id: top level in webhooks; in REST shapes only inside the
    last message (chatwoot-api.md: "There is no top-level contact_inbox")."""
    source_id = _mapping(conversation.get("contact_inbox")).get("source_id")
    if not source_id:
        messages = conversation.get("messages")
        last = messages[0] if isinstance(messages, list) and messages else None
        inner = _mapping(_mapping(last).get("conversation"))
        source_id = _mapping(inner.get("contact_inbox")).get("source_id")
    return source_id if isinstance(source_id, str) and source_id else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
