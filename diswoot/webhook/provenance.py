"""Unauthenticated webhooks (``WEBHOOK_ALLOW_UNAUTHENTICATED=true``) are checked with Chatwoot.

Without a signature or path token anyone who reaches the port can post a webhook.  In that mode
a message event is accepted only for a message Chatwoot has in that conversation, and it carries
Chatwoot's own type, content, attachments and attributes, never the body's; a conversation event
carries Chatwoot's own conversation (current status, no claimed previous status).  A forged claim
is never stored, so it cannot reach a user nor hold the dedupe key of the genuine reply that
later gets its id.  Authenticated webhooks never come here (no extra API call).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import trio

from diswoot.chatwoot.errors import ChatwootError, ChatwootNotFound, ChatwootUnavailable
from diswoot.chatwoot.models import ConversationEvent, MessageEvent, parse_webhook
from diswoot.context import Context

T = TypeVar("T")

CONFIRM_TIMEOUT = 3.0
"""Seconds for the API calls, inside Chatwoot's 5-second webhook timeout."""
CONCURRENT_CONFIRMATIONS = 4
_MESSAGE_FIELDS = (
    "message_type",
    "private",
    "content",
    "content_type",
    "content_attributes",
    "attachments",
    "created_at",
)
"""Taken from Chatwoot's copy of the message (REST shape; the parser reads both shapes)."""


class NotConfirmed(Exception):
    """Chatwoot does not have what the webhook claims (answered 422, nothing stored)."""


class ConfirmationUnavailable(Exception):
    """Chatwoot could not be asked (answered 503; the reconciliation sweep recovers replies)."""


class Provenance:
    """Replaces what an unauthenticated webhook claims with what Chatwoot's API says."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._limit = trio.CapacityLimiter(CONCURRENT_CONFIRMATIONS)

    async def confirm(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body to accept instead of ``body``; raises :class:`NotConfirmed` for a forgery.

        Events the bridge would ignore anyway are returned unchanged (no API call), and so are
        typing events, which no API can confirm and which only show a typing indicator.
        """
        event = parse_webhook(body)
        cfg = self.ctx.cfg
        if event is None or (event.account_id, event.inbox_id) != (
            cfg.chatwoot_account_id,
            cfg.chatwoot_inbox_id,
        ):
            return body
        async with self._limit:
            with trio.move_on_after(CONFIRM_TIMEOUT):
                if isinstance(event, MessageEvent):
                    return await self._message(event, body)
                if isinstance(event, ConversationEvent):
                    return await self._conversation(event)
                return body
        raise ConfirmationUnavailable(f"Chatwoot did not answer within {CONFIRM_TIMEOUT:.0f} s")

    async def _message(self, event: MessageEvent, body: Mapping[str, Any]) -> dict[str, Any]:
        if event.private or event.message_type not in ("outgoing", "template"):
            return dict(body)  # ignored by the outbound bridge whatever Chatwoot says
        cid, mid = event.conversation_id, event.message_id
        page = await self._ask(self.ctx.chatwoot.list_messages(cid, after=mid - 1, before=mid + 1))
        found = next((m for m in page if isinstance(m, dict) and m.get("id") == mid), None)
        if found is None:
            raise NotConfirmed(f"Chatwoot has no message {mid} in conversation {cid}")
        confirmed: dict[str, Any] = {"event": event.event, "id": mid}
        confirmed.update({key: found.get(key) for key in _MESSAGE_FIELDS})
        confirmed["account"] = {"id": self.ctx.cfg.chatwoot_account_id}
        confirmed["inbox"] = {"id": self.ctx.cfg.chatwoot_inbox_id}
        if await self.ctx.store.conversation(cid) is None:
            confirmed["conversation"] = await self._fetch_conversation(cid)
        else:  # routed by the stored mapping; the body's contact is not looked at
            confirmed["conversation"] = {"id": cid}
        return confirmed

    async def _conversation(self, event: ConversationEvent) -> dict[str, Any]:
        confirmed = await self._fetch_conversation(event.conversation_id)
        confirmed["event"] = event.event
        confirmed["account"] = {"id": self.ctx.cfg.chatwoot_account_id}
        # A claimed previous status cannot be checked: the stored one is used instead.
        confirmed["changed_attributes"] = None
        return confirmed

    async def _fetch_conversation(self, conversation_id: int) -> dict[str, Any]:
        conversation = await self._ask(self.ctx.chatwoot.get_conversation(conversation_id))
        if conversation.get("inbox_id") != self.ctx.cfg.chatwoot_inbox_id:
            raise NotConfirmed(f"conversation {conversation_id} is not in the bridge's inbox")
        return dict(conversation)

    async def _ask(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except ChatwootNotFound:
            raise NotConfirmed("Chatwoot does not know that conversation") from None
        except (ChatwootUnavailable, ChatwootError) as exc:
            raise ConfirmationUnavailable(f"could not ask Chatwoot: {exc}") from exc


__all__ = ["ConfirmationUnavailable", "NotConfirmed", "Provenance"]
