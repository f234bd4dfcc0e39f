"""Who a Discord user is in Chatwoot, and which conversation ("ticket") their DMs go to.

Shared by the inbound bridge and the commands.  In the steady state nothing here calls Chatwoot
or reads the store (:mod:`diswoot.store.routing`); a conversation not known to be open is judged
on what Chatwoot says, and a retry first looks for what an earlier attempt may have created.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from diswoot.bridge.attempts import Attempt
from diswoot.bridge.contacts import Contacts
from diswoot.chatwoot.errors import ChatwootNotFound
from diswoot.chatwoot.models import InboxConfig
from diswoot.context import Context
from diswoot.store import Conversation, User
from diswoot.store import queries as q

log = logging.getLogger("diswoot.tickets")

CLOSED_STATUSES = frozenset({"resolved", "snoozed"})
HOUR = 3600.0


@dataclass(frozen=True)
class ConversationChoice:
    """Where a DM goes: ``created`` = a new conversation, ``reopened`` = a closed one reused."""

    conversation_id: int
    created: bool
    reopened: bool
    previous_status: str | None


CREATED_SLACK = 300.0
"""A conversation created this long before our note still counts (clocks differ)."""


class NoTicket(Exception):
    """The user has no Chatwoot contact yet (they never DMed the bot)."""


class ContactGone(Exception):
    """Chatwoot no longer knows the cached contact; the cache was cleared, ensure it again."""


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (trio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Tickets:
    """Contacts and conversations of Discord users, cached in SQLite."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.contacts = Contacts(ctx)
        self._locks = _KeyedLocks()

    # ------------------------------------------------------------------ helpers
    async def inbox(self) -> InboxConfig | None:
        """The cached inbox settings (fetched only while the cache is cold)."""
        return self.ctx.inbox.current or await self.ctx.inbox.get()

    async def user(self, discord_id: str) -> User | None:
        return await self.ctx.store.user(discord_id)

    async def ensure_contact(
        self, user: dict[str, Any], attempt: Attempt | None = None
    ) -> tuple[int, str]:
        """The Chatwoot (contact_id, source_id) of a Discord user (:meth:`Contacts.ensure`),
        under the user's lock."""
        async with self._locks.hold(str(user["id"])):
            return await self.contacts.ensure(user, attempt)

    # ------------------------------------------------------------------ conversations
    async def conversation_for_message(
        self, discord_id: str, *, outside_hours: bool, attempt: Attempt | None = None
    ) -> ConversationChoice:
        """The conversation a new DM goes to (reused, reopened or created)."""
        async with self._locks.hold(discord_id):
            user = await self._contact_user(discord_id)
            previous: str | None = None
            if user.conversation_id is not None:
                choice, previous = await self._reuse(discord_id, user.conversation_id)
                if choice is not None:
                    return choice
            if attempt is not None:
                found = await self._created_unseen(user, attempt)
                if found is not None:
                    return found
                await attempt.begin("conversation")
            return await self._create(user, outside_hours=outside_hours, previous=previous)

    async def _created_unseen(self, user: User, attempt: Attempt) -> ConversationChoice | None:
        """The conversation an earlier attempt created when its answer was lost, if any.

        One ``GET /contacts/{id}/conversations``, only on a retried attempt: a conversation in
        our inbox, created since that attempt began, that the bridge has never seen.
        """
        began = attempt.began("conversation")
        if began is None:
            return None
        assert user.contact_id is not None
        for data in sorted(
            await self.ctx.chatwoot.list_contact_conversations(user.contact_id),
            key=lambda c: int(c.get("id") or 0),
            reverse=True,
        ):
            created = data.get("created_at")
            if not isinstance(created, int | float) or created < began - CREATED_SLACK:
                continue
            if await self.ctx.store.conversation(int(data["id"])) is not None:
                continue
            discord_id = user.discord_id
            cid = (await self._remember(discord_id, data)).conversation_id
            await self.ctx.store.call(q.set_user_conversation, discord_id, cid, self.ctx.clock())
            log.info("user %s: conversation %d was made by an earlier attempt", discord_id, cid)
            return ConversationChoice(cid, True, False, None)
        return None

    async def _reuse(
        self, discord_id: str, conversation_id: int
    ) -> tuple[ConversationChoice | None, str | None]:
        """(choice, None) to keep the mapped conversation, (None, its status) to replace it.

        An ``open``/``pending`` conversation is used as stored (the steady state: no call).
        One stored as ``resolved``/``snoozed``, or whose status is unknown, is read from
        Chatwoot first (one GET, only then): its ``status`` and ``last_activity_at`` decide,
        since agents act where the bridge cannot see it (notes, lost webhooks, a reopen).
        """
        conv = await self.ctx.store.conversation(conversation_id)
        if conv is None or conv.status is None or conv.status in CLOSED_STATUSES:
            fetched = await self._fetch(discord_id, conversation_id)
            if fetched is None:  # deleted in Chatwoot
                return None, None
            conv, last_activity = fetched
        else:
            last_activity = None
        status = conv.status
        if status not in CLOSED_STATUSES:
            return ConversationChoice(conversation_id, False, False, status), None
        if await self._may_reopen(last_activity):
            return ConversationChoice(conversation_id, False, True, status), None
        return None, status

    async def _may_reopen(self, last_activity: float | None) -> bool:
        """Smart reopen: locked inbox, or ``REOPEN_WINDOW_HOURS`` (0 = always) of Chatwoot's
        last activity (None: unknown, reopened)."""
        inbox = await self.inbox()
        window = self.ctx.cfg.reopen_window_hours
        if (inbox is not None and inbox.lock_to_single_conversation) or window <= 0:
            return True
        if last_activity is None:
            return True
        return self.ctx.clock() - last_activity <= window * HOUR

    async def _fetch(
        self, discord_id: str, conversation_id: int
    ) -> tuple[Conversation, float | None] | None:
        """Re-read a conversation from Chatwoot into the store, with Chatwoot's last activity;
        None when it was deleted."""
        try:
            data = await self.ctx.chatwoot.get_conversation(conversation_id)
        except ChatwootNotFound:
            await self.forget_conversation(discord_id, conversation_id)
            return None
        return await self._remember(discord_id, data), _last_activity(data)

    async def _remember(self, discord_id: str, data: dict[str, Any]) -> Conversation:
        return await self.ctx.store.call(
            q.upsert_conversation,
            int(data["id"]),
            discord_id,
            self.ctx.clock(),
            status=data.get("status"),
            last_activity_at=_last_activity(data),
            uuid=data.get("uuid"),
        )

    async def _create(
        self, user: User, *, outside_hours: bool, previous: str | None
    ) -> ConversationChoice:
        """Start a conversation (with a locked inbox Chatwoot hands back the last one)."""
        assert user.contact_id is not None and user.source_id is not None
        store, discord_id = self.ctx.store, user.discord_id
        try:
            data = await self.ctx.chatwoot.create_conversation(
                contact_id=user.contact_id,
                source_id=user.source_id,
                status="pending" if outside_hours else "open",
            )
        except ChatwootNotFound as exc:
            await store.call(q.forget_user_contact, discord_id, self.ctx.clock())
            raise ContactGone(f"contact {user.contact_id} of user {discord_id} is gone") from exc
        conversation_id = int(data["id"])
        known = await store.conversation(conversation_id)
        conv = await self._remember(discord_id, data)
        await store.call(q.set_user_conversation, discord_id, conversation_id, self.ctx.clock())
        if known is not None:  # lock_to_single_conversation: Chatwoot returned the last one
            return ConversationChoice(
                conversation_id, False, conv.status in CLOSED_STATUSES, conv.status
            )
        log.info("user %s: new conversation %d (%s)", discord_id, conversation_id, conv.status)
        return ConversationChoice(conversation_id, True, False, previous)

    async def forget_conversation(self, discord_id: str, conversation_id: int) -> None:
        """The conversation was deleted in Chatwoot: the next DM starts a new one."""
        user = await self.ctx.store.user(discord_id)
        if user is not None and user.conversation_id == conversation_id:
            log.warning("conversation %d of user %s was deleted", conversation_id, discord_id)
            await self.ctx.store.call(q.set_user_conversation, discord_id, None, self.ctx.clock())

    async def _contact_user(self, discord_id: str) -> User:
        user = await self.ctx.store.user(discord_id)
        if user is None or user.contact_id is None or not user.source_id:
            raise NoTicket(f"user {discord_id} has no Chatwoot contact yet")
        return user

    # ------------------------------------------------------------------ for the commands
    async def current(self, discord_id: str, *, refresh: bool = False) -> Conversation | None:
        """The user's current conversation as stored (``refresh``: re-read from Chatwoot).

        Raises :class:`ChatwootNotFound` (after forgetting it) when it was deleted.
        """
        user = await self.ctx.store.user(discord_id)
        if user is None or user.conversation_id is None:
            return None
        conv = await self.ctx.store.conversation(user.conversation_id)
        if conv is not None and not refresh:
            return conv
        try:
            data = await self.ctx.chatwoot.get_conversation(user.conversation_id)
        except ChatwootNotFound:
            await self.forget_conversation(discord_id, user.conversation_id)
            raise
        return await self._remember(discord_id, data)

    async def reopen(self, discord_id: str, *, note: str | None = None) -> ConversationChoice:
        """``/reopen``: set the current conversation open, by the smart-reopen rules.

        Beyond the reopen window (lock_to_single_conversation off), or when the conversation
        is gone, a new one is started instead.  ``note`` is posted as a private note for the
        agents.  Raises :class:`NoTicket` when the user has no contact yet.
        """
        async with self._locks.hold(discord_id):
            user = await self._contact_user(discord_id)
            choice: ConversationChoice | None = None
            previous: str | None = None
            toggle = user.conversation_id is not None
            if user.conversation_id is not None:
                kept, previous = await self._reuse(discord_id, user.conversation_id)
                toggle = kept is not None
            if user.conversation_id is not None and toggle:
                try:
                    status = await self.ctx.chatwoot.toggle_status(user.conversation_id, "open")
                except ChatwootNotFound:
                    await self.forget_conversation(discord_id, user.conversation_id)
                else:
                    previous = await self._record_status(discord_id, user.conversation_id, status)
                    reopened = previous != status
                    choice = ConversationChoice(user.conversation_id, False, reopened, previous)
            if choice is None:
                choice = await self._create(user, outside_hours=False, previous=previous)
            if note:
                await self._note(choice.conversation_id, note)
            return choice

    async def resolve(self, discord_id: str, *, note: str | None = None) -> int | None:
        """``/close``: resolve the current conversation; its id, or None if there is none.

        The "closed by the user" flag is set *before* toggling, so the ``resolved`` webhook
        does not send a second notice.  Raises :class:`ChatwootNotFound` when it was deleted.
        """
        async with self._locks.hold(discord_id):
            user = await self.ctx.store.user(discord_id)
            if user is None or user.conversation_id is None:
                return None
            conversation_id, store, now = user.conversation_id, self.ctx.store, self.ctx.clock()
            try:
                if note:
                    await self._note(conversation_id, note)
                await store.call(q.upsert_conversation, conversation_id, discord_id, now)
                await store.call(q.set_closed_by_user, conversation_id, now)
                status = await self.ctx.chatwoot.toggle_status(conversation_id, "resolved")
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await store.call(q.set_closed_by_user, conversation_id, None)
                    if isinstance(exc, ChatwootNotFound):
                        await self.forget_conversation(discord_id, conversation_id)
                raise
            await self._record_status(discord_id, conversation_id, status)
            return conversation_id

    async def _note(self, conversation_id: int, text: str) -> None:
        await self.ctx.chatwoot.create_message(
            conversation_id, content=text, message_type="outgoing", private=True
        )

    async def _record_status(
        self, discord_id: str, conversation_id: int, status: str
    ) -> str | None:
        """Store a status we caused; return the previous one."""
        store = self.ctx.store
        before = await store.conversation(conversation_id)
        await store.call(
            q.upsert_conversation, conversation_id, discord_id, self.ctx.clock(), status=status
        )
        return before.status if before is not None else None

    # ------------------------------------------------------------------ for the webhooks
    async def note_status(
        self, conversation_id: int, status: str, *, last_activity_at: float | None = None
    ) -> str | None:
        """A webhook reported a status (and maybe activity); return the previous status.

        Only conversations the bridge knows are updated.
        """
        store = self.ctx.store
        previous = await store.call(
            q.change_conversation_status, conversation_id, status, self.ctx.clock()
        )
        if last_activity_at is not None:
            await store.call(q.touch_conversation, conversation_id, last_activity_at)
        return previous


def _last_activity(data: dict[str, Any]) -> float | None:
    """Chatwoot's ``last_activity_at`` of a conversation (its ``timestamp`` in some payloads)."""
    for key in ("last_activity_at", "timestamp"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
