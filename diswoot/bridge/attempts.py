"""Creation attempts noted before each POST, because Chatwoot has no idempotency keys.

A job that creates something in Chatwoot (a contact, its contact inbox, a conversation) notes
the step durably first.  When the answer is lost (a timeout, a crash) after Chatwoot saved the
object, the retried attempt sees the note and looks for what the earlier one made before it
creates anything again.
"""

from __future__ import annotations

from typing import Protocol

from diswoot.context import Context
from diswoot.store import Job
from diswoot.store import queries as q


class Attempt(Protocol):
    """What earlier attempts of one job began creating in Chatwoot, noted durably before each
    POST: Chatwoot has no idempotency keys, and an answer can be lost (a timeout, a crash) after
    Chatwoot saved the object.  A retried attempt looks for what it may have made first."""

    def began(self, step: str) -> float | None:
        """When an earlier attempt began ``step`` (None: never)."""

    async def begin(self, step: str) -> None:
        """Note durably that ``step`` is about to be attempted."""


class JobAttempt:
    """:class:`Attempt` kept in a job's payload (``began``), written through to the store."""

    def __init__(self, ctx: Context, job: Job) -> None:
        self.ctx = ctx
        self.job = job

    def began(self, step: str) -> float | None:
        began = self.job.payload.get("began") or {}
        value = began.get(step)
        return float(value) if isinstance(value, int | float) else None

    async def begin(self, step: str) -> None:
        self.job.payload.setdefault("began", {})[step] = self.ctx.clock()
        await self.ctx.store.call(q.update_job_payload, self.job.id, self.job.payload)
