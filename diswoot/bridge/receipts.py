"""Delivery receipts: agents see in Chatwoot whether each reply reached the user.

A reply job's end stores its receipt job in the same transaction (:meth:`Receipts.finish_with`,
or the last part's step of :func:`~diswoot.bridge.delivery.deliver_parts`); the ``receipts``
queue then marks the Chatwoot message ``delivered`` or ``failed`` (with the reason), per
conversation in order.  Setting a status twice changes nothing, so a receipt's end is a
deferred write.  A Chatwoot that cannot mark a message failed gets a private note instead.
"""

from __future__ import annotations

import logging
from typing import Any

from diswoot.bridge.jobs import Finished, FinishLater, JobQueue
from diswoot.chatwoot.errors import ChatwootError
from diswoot.context import Context
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.outbound")


class Receipts:
    """The ``receipts`` queue and the receipt jobs of reply deliveries."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = JobQueue(ctx.store, "receipts", self.send, clock=ctx.clock)

    def job_for(self, job: Job, status: str, error: str | None) -> q.JobToAdd:
        """The receipt of a reply job's delivery attempt; the first keeps the historical key."""
        cid, mid = int(job.payload["conversation_id"]), int(job.payload["message_id"])
        first = job.dedupe_key == f"msg:{mid}"
        return q.JobToAdd(
            self.queue.name,
            f"receipt:{mid}" if first else f"receipt:{job.dedupe_key}",
            f"conv:{cid}",
            "receipt",
            {"conversation_id": cid, "message_id": mid, "status": status, "error": error},
        )

    async def finish_with(
        self, job: Job, result: dict[str, Any], status: str, error: str | None
    ) -> Finished:
        """End a reply job and queue its receipt for the agent, in one transaction.

        One receipt per delivery attempt: the first keeps the historical key.
        """
        receipt = self.job_for(job, status, error)
        added = await self.ctx.store.call(
            q.finish_job_and_add, job.id, self.ctx.clock(), result, receipt
        )
        if added is not None:
            self.queue.schedule_stored(added)
        return Finished(result)

    async def send(self, job: Job) -> dict[str, Any] | FinishLater:
        """Mark the Chatwoot message delivered/failed; a failure without that API -> a note.

        Setting a status twice changes nothing: then the job's end is a deferred write.
        """
        p, chatwoot = job.payload, self.ctx.chatwoot
        cid, mid, status, error = p["conversation_id"], p["message_id"], p["status"], p["error"]
        try:
            await chatwoot.update_message_status(cid, mid, status, external_error=error)
            return FinishLater({"status": status})
        except ChatwootError as exc:
            if exc.transient:
                raise
            if status != "failed":
                log.info("could not mark Chatwoot message %d %s: %s", mid, status, exc)
                return FinishLater({"skipped": exc.status})
            log.warning(
                "could not mark Chatwoot message %d failed (%s); adding a private note", mid, exc
            )
        note = f"⚠️ This reply was not delivered to the user on Discord. {error}"
        await chatwoot.create_message(cid, content=note, message_type="outgoing", private=True)
        return {"status": status, "private_note": True}
