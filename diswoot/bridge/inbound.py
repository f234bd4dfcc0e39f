"""Discord DMs -> Chatwoot incoming messages: stored first, delivered exactly once, in order.

The router hands every user DM to :meth:`InboundBridge.accept_message`, which only stores a job
(keyed by the Discord message id, laned by the author); :meth:`InboundBridge.handle` delivers
it to Chatwoot, and only then adds the confirm reaction, so the reaction means "delivered".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from diswoot.bridge.attempts import JobAttempt
from diswoot.bridge.backfill import Backfill
from diswoot.bridge.dm_content import dm_text
from diswoot.bridge.dm_files import DOWNLOAD_ATTEMPTS, AttachmentTooLarge, dm_uploads
from diswoot.bridge.jobs import Finished, JobQueue, PermanentFailure, RetryLater
from diswoot.bridge.notices import UserNotices
from diswoot.bridge.outbound import OutboundBridge
from diswoot.bridge.tickets import ContactGone, ConversationChoice, Tickets
from diswoot.bridge.user_typing import TypingRelay
from diswoot.chatwoot.errors import ChatwootNotFound, ChatwootUnavailable
from diswoot.chatwoot.hours import WorkingHours
from diswoot.context import Context
from diswoot.gateway.events import MessageCreate, MessageDelete, MessageUpdate, TypingStart
from diswoot.store import Job
from diswoot.store import queries as q
from diswoot.store.models import Conversation, User

log = logging.getLogger("diswoot.inbound")

QUEUE = "inbound"
KIND_MESSAGE, KIND_EDIT, KIND_DELETE = "message", "edit", "delete"
KIND_COMMAND = "command"  # a `!` text command, keyed by its message id as a DM is
CONCURRENCY = 16
MAX_ROUTE_ATTEMPTS = 3  # contact/conversation deleted under us: re-create, a few times at most
LIST_PAGE = 100  # GET messages?after= returns at most this many

CommandRunner = Callable[[Job], Awaitable[dict[str, Any]]]


class InboundBridge:
    """The inbound half of the bridge (see docs/modules.md)."""

    def __init__(self, ctx: Context, outbound: OutboundBridge) -> None:
        self.ctx = ctx
        self.outbound = outbound
        self.tickets = Tickets(ctx)
        self.queue = JobQueue(ctx.store, QUEUE, self.handle, concurrency=CONCURRENCY)
        self.typing = TypingRelay(ctx)
        self.notices = UserNotices(ctx, outbound)
        self.backfill = Backfill(ctx, self)
        self.command_runner: CommandRunner | None = None  # runs queued text commands
        self._stop = trio.Event()  # the service's, once start_background has run
        # DM jobs stored by this process with their ``posting`` note and not attempted yet:
        # their first attempt knows nothing was posted (no search) nor needs a new note
        self._noted_at_intake: set[int] = set()

    # ------------------------------------------------------------------ gateway side
    async def accept_messages(self, events: Sequence[MessageCreate]) -> list[bool]:
        """Store DMs as jobs in one transaction (no network call); False for a duplicate.

        Each user's DM channel and newest DM id are noted with them: the backfill starts there.
        """
        now = self.ctx.clock()
        dms, next_up = [], set()
        for event in events:
            dm = _to_store(event, KIND_MESSAGE, now)
            if dm.lane not in next_up and self.queue.lane_idle(dm.lane):
                # runs at once: its posting note is stored with it.  Only then: a stored note
                # means "may be in Chatwoot", so after a restart a noted DM is searched for
                # first, and a queue of noted DMs would cost a search each
                next_up.add(dm.lane)
                dm = dm._replace(posting_conversation=self._open_conversation(dm.discord_id))
            dms.append(dm)
        jobs = await self.ctx.store.call(q.accept_dms, self.queue.name, dms, now)
        for event, dm, job in zip(events, dms, jobs, strict=True):
            if job is None:
                self.queue.note_duplicate()
                continue
            if dm.posting_conversation is not None:
                self._noted_at_intake.add(job.id)
            self.queue.schedule_stored(job)
            self.ctx.discord.remember_dm_channel(event.author_id, event.channel_id)
            self.ctx.metrics.dms_received.inc()
            self.typing.message_sent(event.author_id)
        return [job is not None for job in jobs]

    def _open_conversation(self, discord_id: str) -> int | None:
        """The user's open or pending conversation, if memory knows it (no store read)."""
        user = self.ctx.store.routing.users.get(discord_id)
        if not isinstance(user, User) or user.conversation_id is None:
            return None
        conversation = self.ctx.store.routing.conversations.get(user.conversation_id)
        if isinstance(conversation, Conversation) and conversation.status in ("open", "pending"):
            return conversation.conversation_id
        return None

    async def accept_message(self, event: MessageCreate) -> bool:
        """:meth:`accept_messages` for one DM."""
        [stored] = await self.accept_messages([event])
        return stored

    async def accept_command(self, event: MessageCreate, *, run_now: bool) -> bool:
        """Store a ``!`` text command under its message id, as a DM is; False if seen before.

        Live (``run_now``) it is stored as done and the caller runs it at once; from the
        backfill it is queued in the user's lane, so :attr:`command_runner` runs it after the
        DMs sent before it and before those sent after it.  Either way it runs once,
        whichever route (live, RESUME replay, backfill) brought it first.
        """
        now = self.ctx.clock()
        command = _to_store(event, KIND_COMMAND, now)
        job = await self.ctx.store.call(
            q.accept_command, self.queue.name, command, now, done=run_now
        )
        if job is None:
            self.queue.note_duplicate()
            return False
        if not run_now:
            self.queue.schedule_stored(job)
        return True

    async def accept_edit(self, event: MessageUpdate) -> bool:
        """Store an edit of a DM (False: seen before); a private note if it was forwarded."""
        edited_at = event.data.get("edited_timestamp")
        if not edited_at or "content" not in event.data:
            return False  # an embed unfurl or similar, not an edit by the user
        payload = {
            "message_id": event.id,
            "channel_id": event.channel_id,
            "content": event.content,
            "edited_at": edited_at,
        }
        key = f"edit:{event.id}:{edited_at}"
        return await self.queue.submit(KIND_EDIT, key, event.author_id, payload) is not None

    async def accept_delete(self, event: MessageDelete) -> None:
        """Store a deletion of a DM, in the lane of the DM's author (if we know them)."""
        lane = await self.ctx.store.call(q.job_lane, QUEUE, event.id)
        if lane is None:
            user = await self.ctx.store.call(q.user_by_channel, event.channel_id)
            if user is None:
                return  # not a DM we ever handled
            lane = user.discord_id
        payload = {"message_id": event.id, "channel_id": event.channel_id}
        await self.queue.submit(KIND_DELETE, f"delete:{event.id}", lane, payload)

    def user_typing(self, event: TypingStart) -> None:
        """The user is typing in their DM: shown to agents (never blocks)."""
        self.typing.user_typing(event)

    def session_started(self, nursery: trio.Nursery) -> None:
        """A fresh gateway session (READY): fetch the DMs sent while there was none."""
        nursery.start_soon(self.backfill.run, self._stop, name="backfill")

    async def start_background(self, nursery: trio.Nursery, stop: trio.Event) -> None:
        """Start the typing relay (the queue itself is run by the service)."""
        self._stop = stop
        await nursery.start(self.typing.run, stop)

    # ------------------------------------------------------------------ delivery
    async def handle(self, job: Job) -> dict[str, Any] | Finished | None:
        """Deliver one stored job (the queue's handler; failures follow ``jobs.classify``)."""
        try:
            return await self._handle(job)
        finally:
            self._noted_at_intake.discard(job.id)  # a later attempt may follow a POST

    async def _handle(self, job: Job) -> dict[str, Any] | Finished | None:
        try:
            if job.kind == KIND_MESSAGE:
                return await self._deliver_message(job)
            if job.kind in (KIND_EDIT, KIND_DELETE):
                return await self._annotate(job)
            if job.kind == KIND_COMMAND and self.command_runner is not None:
                return await self.command_runner(job)
        except ChatwootUnavailable as exc:
            if job.kind == KIND_MESSAGE:
                await self.notices.saved_for_later(job, str(exc))
            raise
        except AttachmentTooLarge as exc:  # its size was not announced: a link next time
            job.payload.setdefault("oversize", []).append(exc.attachment_id)
            await self.ctx.store.call(q.update_job_payload, job.id, job.payload)
            raise RetryLater(str(exc), delay=0.0) from exc
        raise PermanentFailure(f"unknown inbound job kind {job.kind!r}")

    async def _deliver_message(self, job: Job) -> dict[str, Any] | Finished:
        data: dict[str, Any] = job.payload["message"]
        message_id, channel_id = str(data["id"]), str(data["channel_id"])
        author: dict[str, Any] = data["author"]
        discord_id = str(author["id"])
        received_at = float(job.payload.get("received_at") or self.ctx.clock())
        inbox = await self.tickets.inbox()
        hours = inbox.hours if inbox else WorkingHours.always_open()
        received = datetime.fromtimestamp(received_at, UTC)
        outside = not hours.is_open(received)
        link = None
        if "posting" in job.payload and job.id not in self._noted_at_intake:
            # an earlier attempt POSTed: it may have been recorded
            links = await self.ctx.store.call(q.links_for_discord, message_id)
            link = next((lk for lk in links if lk.direction == "in"), None)
        if link is not None:
            conversation_id, chatwoot_id = link.conversation_id, link.chatwoot_message_id
            await self._confirm(channel_id, message_id)
            result: dict[str, Any] = {}
        else:
            if outside and not self.ctx.cfg.outside_hours_behavior:
                await self.notices.out_of_office(
                    discord_id, inbox, hours, f"ooo:{message_id}", conversation_id=None
                )
                return {"outcome": "denied_outside_hours"}
            choice, posted = await self._route_and_post(job, author, data, outside)
            conversation_id, chatwoot_id = choice.conversation_id, int(posted["id"])
            result = {"created": choice.created, "reopened": choice.reopened}
        result.update(conversation_id=conversation_id, chatwoot_message_id=chatwoot_id)
        self.notices.delivered(discord_id)
        user = await self.ctx.store.user(discord_id)
        followups = outside or user is None or user.greeted_at is None
        if link is None:
            # the link, the activity, the confirm reaction and (steady state) the job's end
            reaction = self.outbound.reaction_job(channel_id, message_id)
            added = await self.ctx.store.call(
                q.record_inbound_delivery,
                discord_message_id=message_id,
                chatwoot_message_id=chatwoot_id,
                conversation_id=conversation_id,
                channel_id=channel_id,
                now=self.ctx.clock(),
                reopened=bool(result["reopened"]),
                finish=None if followups else (job.id, result),
                then=reaction,
            )
            if added is not None:
                self.outbound.queue.schedule_stored(added)
            self.ctx.metrics.dms_forwarded.inc()
            latency = max(0.0, self.ctx.clock() - received_at)
            self.ctx.metrics.delivery_latency.labels("inbound").observe(latency)
        if not followups:
            return Finished(result)
        await self.notices.greet(discord_id, inbox, conversation_id)
        if outside:
            await self.notices.out_of_office_once(discord_id, inbox, hours, conversation_id)
        return result

    async def _route_and_post(
        self, job: Job, author: dict[str, Any], data: dict[str, Any], outside: bool
    ) -> tuple[ConversationChoice, dict[str, Any]]:
        """Contact, conversation, POST; re-created when Chatwoot lost them underneath us."""
        discord_id, message_id = str(author["id"]), str(data["id"])
        attempt = JobAttempt(self.ctx, job)
        for _ in range(MAX_ROUTE_ATTEMPTS):
            await self.tickets.ensure_contact(author, attempt)
            try:
                choice = await self.tickets.conversation_for_message(
                    discord_id, outside_hours=outside, attempt=attempt
                )
            except ContactGone:
                continue
            conversation_id = choice.conversation_id
            try:
                posted = await self._post_once(
                    job,
                    conversation_id,
                    source_id=message_id,
                    content=dm_text(data),
                    files=data,
                    message_type="incoming",
                    content_attributes=await self._reply_attributes(data, conversation_id),
                )
            except ChatwootNotFound:
                await self.tickets.forget_conversation(discord_id, conversation_id)
                continue
            return choice, posted
        raise PermanentFailure(
            f"Chatwoot keeps losing the contact/conversation of user {discord_id} (404 after "
            f"re-creating it {MAX_ROUTE_ATTEMPTS} times); check CHATWOOT_ACCOUNT_ID/INBOX_ID"
        )

    async def _post_once(
        self,
        job: Job,
        conversation_id: int,
        *,
        source_id: str,
        content: str,
        files: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """POST a message at most once per job, although Chatwoot has no idempotency.

        The attempt (conversation, newest known message id) is stored in the job before the
        POST (with the job itself when the DM arrived for a known open conversation); if it
        is there from an earlier attempt, that one may have succeeded unseen, so the
        conversation is searched for our ``source_id`` first.  ``files``: the Discord message
        whose attachments are uploaded with it (or linked, with a note, below the text).
        """
        store = self.ctx.store
        attempt = job.payload.get("posting")
        # noted when stored, by this process, and not attempted: nothing was posted yet
        fresh = job.id in self._noted_at_intake
        self._noted_at_intake.discard(job.id)
        noted = fresh and attempt is not None and attempt["conversation_id"] == conversation_id
        if attempt is not None and not fresh:
            found = await self._find_posted(
                int(attempt["conversation_id"]), source_id, attempt.get("after")
            )
            if found is not None:
                log.info("%s %s is in Chatwoot already (%s)", job.kind, source_id, found["id"])
                return found
        oversize = {str(i) for i in job.payload.get("oversize") or ()}
        last_try = job.attempts + 1 >= DOWNLOAD_ATTEMPTS
        async with dm_uploads(self.ctx, files, oversize=oversize, last_try=last_try) as (
            parts,
            notes,
        ):
            if not noted:
                await store.call(q.begin_post, job.id, job.payload, conversation_id)
            text = "\n".join(line for line in (content, *notes) if line)
            return await self.ctx.chatwoot.create_message(
                conversation_id,
                source_id=source_id,
                content=text or (None if parts else "(empty message)"),
                attachments=parts,
                **fields,
            )

    async def _find_posted(
        self, conversation_id: int, source_id: str, after: int | None
    ) -> dict[str, Any] | None:
        """The message with ``source_id`` posted after message ``after`` (None: latest 20)."""
        try:
            while True:
                page = await self.ctx.chatwoot.list_messages(conversation_id, after=after)
                for message in page:
                    if message.get("source_id") == source_id:
                        return message
                if after is None or len(page) < LIST_PAGE:
                    return None
                after = max(int(m["id"]) for m in page)
        except ChatwootNotFound:
            return None

    async def _reply_attributes(
        self, data: dict[str, Any], conversation_id: int
    ) -> dict[str, Any] | None:
        """``in_reply_to`` for a Discord reply (to a linked message, or by external id)."""
        reference = data.get("message_reference") or {}
        target = reference.get("message_id")
        if not target or reference.get("type", 0) != 0:
            return None  # not a reply (type 1 is a forward)
        links = await self.ctx.store.call(q.links_for_discord, str(target))
        same = [lk for lk in links if lk.conversation_id == conversation_id]
        if same:
            return {"in_reply_to": same[0].chatwoot_message_id}
        return {"in_reply_to_external_id": str(target)}

    async def _annotate(self, job: Job) -> dict[str, Any]:
        """An edit or a deletion of a forwarded DM -> a private note replying to it."""
        message_id = str(job.payload["message_id"])
        links = await self.ctx.store.call(q.links_for_discord, message_id)
        link = next((lk for lk in links if lk.direction == "in"), None)
        if link is None:
            return {"outcome": "not_forwarded"}
        if job.kind == KIND_EDIT:
            text = f"✏️ edited: {job.payload['content']}"
        else:
            text = "🗑️ deleted: the user deleted this message in Discord"
        try:
            note = await self._post_once(
                job,
                link.conversation_id,
                source_id=job.dedupe_key,
                content=text,
                message_type="outgoing",
                private=True,
                content_attributes={"in_reply_to": link.chatwoot_message_id},
            )
        except ChatwootNotFound:
            return {"outcome": "conversation_deleted"}
        return {"conversation_id": link.conversation_id, "chatwoot_message_id": int(note["id"])}

    async def _confirm(self, channel_id: str, message_id: str) -> None:
        """React with CONFIRM_EMOJI once Chatwoot has the message (queued, durable)."""
        await self.outbound.send_reaction(channel_id, message_id)


def _to_store(event: MessageCreate, kind: str, now: float) -> q.DmToStore:
    """A user's message as a job in their lane, keyed by its message id."""
    return q.DmToStore(
        lane=event.author_id,
        kind=kind,
        payload={"message": event.data, "received_at": now},
        discord_id=event.author_id,
        channel_id=event.channel_id,
        message_id=event.id,
    )
