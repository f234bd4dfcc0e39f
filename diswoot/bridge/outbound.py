"""Chatwoot -> Discord: agent replies and ticket status notices, durably and exactly once.

:mod:`diswoot.bridge.webhook_intake` stores what must be delivered on the ``outbound`` queue;
this module delivers it per conversation, in order.  Replies are idempotent per Chatwoot message
id, and the ``receipts`` queue marks each ``delivered`` or ``failed`` in Chatwoot.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from diswoot.bridge import embeds
from diswoot.bridge.agent_typing import AgentTyping
from diswoot.bridge.csat import CsatFlow
from diswoot.bridge.delivery import Ending, Undeliverable, Withdrawn, deliver_parts
from diswoot.bridge.jobs import Finished, FinishLater, JobQueue, PermanentFailure
from diswoot.bridge.receipts import Receipts
from diswoot.bridge.recent import RecentIds
from diswoot.bridge.reconcile import Reconciler
from diswoot.bridge.reply_layout import is_inbox_template, reply_parts, upload_limit
from diswoot.bridge.webhook_intake import WebhookIntake
from diswoot.context import Context
from diswoot.gateway.events import GatewayStatus
from diswoot.rest.errors import DiscordHTTPError
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.outbound")

DELIVERED_REMEMBERED = 4096  # reply ids kept in memory: their receipt echoes cost no store read
UNKNOWN_MESSAGE = 10008
GATEWAY_POLL_SECONDS = 5.0
_OPEN_REASONS: dict[str, embeds.ReopenReason] = {
    "pending": "picked up",
    "snoozed": "unsnoozed",
    "resolved": "reopened",
}


class OutboundBridge:
    """The ``outbound`` queue's deliveries, with the webhook intake that feeds it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = JobQueue(ctx.store, "outbound", self.handle, clock=ctx.clock)
        self.receipts = Receipts(ctx)
        self.csat = CsatFlow(ctx)
        self.extra_queues: list[JobQueue] = [self.csat.queue, self.receipts.queue]
        self.typing = AgentTyping(ctx)
        self.delivered = RecentIds(DELIVERED_REMEMBERED)  # replies delivered lately (ids)
        # reply jobs stored prepared by the intake and not run yet: job id -> message id
        # (an agent's deletion meanwhile drops its entries: the run checks the store again)
        self._prepared: dict[int, int] = {}
        # replies an agent deleted lately (ids): a send still waiting for its turn is dropped
        self.withdrawn = RecentIds(DELIVERED_REMEMBERED)
        self.intake = WebhookIntake(
            ctx, self.queue, self.typing, self.delivered, self._prepared, self.withdrawn
        )
        self.reconciler = Reconciler(ctx, self.intake)

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
        nursery.start_soon(wake_when_discord_is_ready, self.ctx.gateway, self.queue, stop)
        nursery.start_soon(self.typing.run, stop)
        nursery.start_soon(self.reconciler.run, stop)

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
            parts = reply_parts(p, upload_limit=upload_limit(ctx.cfg))
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
            ctx,
            job,
            p["discord_id"],
            chatwoot_message_id=mid,
            conversation_id=cid,
            ending=ending,
            still_wanted=lambda: mid not in self.withdrawn,
        )
        if isinstance(outcome, Withdrawn):  # the deletion's job removes any part sent before
            log.info("reply %d was deleted by an agent before it was sent", mid)
            return {"suppressed": "deleted by an agent", "discord_message_ids": p["sent"]}
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
            if not p.get("closed_by_user") and cfg.resolved_message.strip():
                parts.append({"embeds": [embeds.resolved_embed(cfg, cfg.resolved_message)]})
                kinds.append("resolved")
            if await self._csat_wanted(cid):
                parts.append(embeds.csat_prompt(cfg, cid))
                kinds.append("csat_prompt")
        elif status == "open" and previous in _OPEN_REASONS and cfg.reopened_message.strip():
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


async def wake_when_discord_is_ready(
    gateway: GatewayStatus, queue: JobQueue, stop: trio.Event
) -> None:
    """Deliveries waiting out a Discord outage are retried as soon as the gateway is ready
    again (checked every ``GATEWAY_POLL_SECONDS``), not when their back-off ends."""
    was_ready, seen_ready = False, False
    while not stop.is_set():
        ready = gateway.state == "ready"
        if ready and not was_ready and queue.depth:
            how = "is back" if seen_ready else "is connected"
            log.info("Discord %s; retrying %d waiting delivery(ies) now", how, queue.depth)
            queue.wake()
        was_ready, seen_ready = ready, seen_ready or ready
        with trio.move_on_after(GATEWAY_POLL_SECONDS):
            await stop.wait()
