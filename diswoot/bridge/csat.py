"""Native CSAT from Discord: the "Rate us" button, the rating modal, and the durable submission.

The interaction handlers answer from SQLite alone (Discord's 3-second window): the button opens
the modal; a valid rating is saved locally (one per conversation; Chatwoot would silently
overwrite a second one) and acknowledged ephemerally.  The ``csat`` queue then edits the prompt
(rating shown, button disabled) and submits to Chatwoot's public CSAT endpoint, retrying while
Chatwoot is down.  A survey older than Chatwoot's 14-day lock is refused with a clear message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from diswoot.bridge import embeds
from diswoot.bridge.jobs import JobQueue, PermanentFailure, RetryLater
from diswoot.chatwoot.errors import (
    ChatwootCsatLocked,
    ChatwootNotFound,
    ChatwootUnavailable,
)
from diswoot.context import Context
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.snowflake import snowflake_time
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.csat")

EPHEMERAL = 1 << 6
CSAT_LOCK_DAYS = 14
"""Chatwoot refuses updates when (today - survey date) > 14 calendar days (UTC)."""
NOT_FOUND_RETRIES = 5
"""Chatwoot writes its survey message asynchronously: a 404 right after resolving may pass."""
NOT_FOUND_DELAY = 30.0


def ephemeral(embed: dict[str, Any]) -> dict[str, Any]:
    """An interaction callback only the clicking user sees (type 4, EPHEMERAL)."""
    return {
        "type": 4,
        "data": {"embeds": [embed], "flags": EPHEMERAL, "allowed_mentions": {"parse": []}},
    }


def survey_expired(prompt_message_id: str | None, now: float) -> bool:
    """Chatwoot's 14-day rule, applied to the prompt's creation time (its snowflake)."""
    if not prompt_message_id:
        return False
    try:
        created = snowflake_time(prompt_message_id).date()
    except ValueError:
        return False
    today = datetime.fromtimestamp(now, UTC).date()
    return (today - created).days > CSAT_LOCK_DAYS


def _invoker(interaction: dict[str, Any]) -> str | None:
    user = (interaction.get("member") or {}).get("user") or interaction.get("user") or {}
    user_id = user.get("id")
    return str(user_id) if user_id is not None else None


def _conversation_id(interaction: dict[str, Any], prefix: str) -> int | None:
    custom_id = str((interaction.get("data") or {}).get("custom_id") or "")
    suffix = custom_id.removeprefix(prefix)
    return int(suffix) if custom_id.startswith(prefix) and suffix.isdecimal() else None


class CsatFlow:
    """The CSAT button/modal handlers and the ``csat`` submission queue."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = JobQueue(ctx.store, "csat", self.handle, clock=ctx.clock)

    # ------------------------------------------------------------------ interactions

    async def on_button(self, interaction: dict[str, Any]) -> dict[str, Any]:
        """ "Rate us" clicked: the modal, or an ephemeral notice (already rated, expired...)."""
        cid = _conversation_id(interaction, "csat:")
        problem = await self._check_owner(cid, _invoker(interaction))
        if problem is not None:
            return problem
        assert cid is not None
        cfg = self.ctx.cfg
        if await self.ctx.store.call(q.get_csat, cid) is not None:
            return ephemeral(self._already_rated_embed())
        prompt_id = (interaction.get("message") or {}).get("id")
        if survey_expired(prompt_id, self.ctx.clock()):
            return ephemeral(self._expired_embed())
        return {"type": 9, "data": embeds.csat_modal(cfg, cid)}

    async def on_modal(self, interaction: dict[str, Any]) -> dict[str, Any]:
        """Rating submitted: validate, save once, queue the submission, acknowledge."""
        cfg, store = self.ctx.cfg, self.ctx.store
        cid = _conversation_id(interaction, "csat_modal:")
        user_id = _invoker(interaction)
        problem = await self._check_owner(cid, user_id)
        if problem is not None:
            return problem
        assert cid is not None and user_id is not None
        answer = embeds.parse_csat(embeds.parse_modal_values(interaction.get("data") or {}))
        if answer is None:
            return ephemeral(
                embeds.error_embed(cfg, "Please rate with a whole number from 1 to 5.")
            )
        rating, comment = answer
        if not cfg.csat_comment_enabled:
            comment = None
        if not await store.call(q.save_csat, cid, user_id, rating, comment, self.ctx.clock()):
            return ephemeral(self._already_rated_embed())
        message = interaction.get("message") or {}
        await self.queue.submit(
            "csat",
            f"csat:{cid}",
            f"csat:{cid}",
            {
                "conversation_id": cid,
                "discord_id": user_id,
                "rating": rating,
                "comment": comment,
                "channel_id": message.get("channel_id") or interaction.get("channel_id"),
                "message_id": message.get("id"),
                "application_id": interaction.get("application_id") or self.ctx.app_id,
                "token": interaction.get("token"),
            },
        )
        log.info("conversation %d rated %d by %s", cid, rating, user_id)
        return ephemeral(
            embeds.success_embed(
                cfg,
                "Thanks for your feedback!",
                f"You rated us {embeds.stars(rating)} ({rating}/5).",
            )
        )

    async def _check_owner(
        self, conversation_id: int | None, user_id: str | None
    ) -> dict[str, Any] | None:
        """An ephemeral error unless the conversation is known and belongs to this user."""
        conv = None
        if conversation_id is not None:
            conv = await self.ctx.store.conversation(conversation_id)
        if conv is None or user_id is None or conv.discord_id != user_id:
            return ephemeral(
                embeds.error_embed(self.ctx.cfg, "This survey is not available any more.")
            )
        return None

    def _expired_embed(self) -> dict[str, Any]:
        return embeds.info_embed(
            self.ctx.cfg,
            "Survey expired",
            "Ratings are accepted for 14 days after a ticket closes.",
        )

    def _already_rated_embed(self) -> dict[str, Any]:
        return embeds.info_embed(
            self.ctx.cfg, "Already rated", "You have already rated this conversation. Thank you!"
        )

    # ------------------------------------------------------------------ the csat queue

    async def handle(self, job: Job) -> dict[str, Any]:
        """Show the rating on the prompt, then submit it to Chatwoot (retried while down)."""
        p, cfg = job.payload, self.ctx.cfg
        if not p.get("prompt_updated"):
            await self._edit_prompt(p, embeds.csat_rated_message(cfg, p["rating"], p["comment"]))
            p["prompt_updated"] = True
            await self.ctx.store.call(q.update_job_payload, job.id, p)
        cid = int(p["conversation_id"])
        try:
            uuid = await self._uuid(cid)
            await self.ctx.chatwoot.submit_csat(uuid, int(p["rating"]), p["comment"])
        except ChatwootCsatLocked:
            log.info("CSAT of conversation %d refused: the survey is locked", cid)
            await self._tell_expired(p)
            return {"locked": True}
        except ChatwootNotFound as exc:
            if job.attempts + 1 < NOT_FOUND_RETRIES:
                raise RetryLater(f"no CSAT survey yet: {exc}", delay=NOT_FOUND_DELAY) from exc
            raise PermanentFailure(f"conversation {cid} has no CSAT survey: {exc}") from exc
        await self.ctx.store.call(q.mark_csat_submitted, cid, self.ctx.clock())
        return {"submitted": p["rating"]}

    async def _uuid(self, conversation_id: int) -> str:
        conv = await self.ctx.store.conversation(conversation_id)
        if conv is not None and conv.uuid:
            return conv.uuid
        data = await self.ctx.chatwoot.get_conversation(conversation_id)
        uuid = data.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise ChatwootUnavailable(f"conversation {conversation_id} JSON has no uuid")
        await self.ctx.store.call(q.set_conversation_uuid, conversation_id, uuid)
        return uuid

    async def _edit_prompt(self, p: dict[str, Any], fields: dict[str, Any]) -> None:
        """Edit the "Rate us" message; a deleted one is fine, an outage is retried."""
        if not p.get("channel_id") or not p.get("message_id"):
            return
        try:
            await self.ctx.discord.edit_message(p["channel_id"], p["message_id"], **fields)
        except DiscordHTTPError as exc:
            if exc.transient:
                raise
            log.warning("could not update the CSAT prompt %s: %s", p["message_id"], exc)

    async def _tell_expired(self, p: dict[str, Any]) -> None:
        """The survey is locked: say so on the prompt and, while the token lives, ephemerally."""
        embed = self._expired_embed()
        await self._edit_prompt(p, {"embeds": [embed], "components": []})
        if not p.get("token"):
            return
        try:
            await self.ctx.discord.create_followup(
                p["application_id"], p["token"], {"embeds": [embed], "flags": EPHEMERAL}
            )
        except (DiscordHTTPError, DiscordUnavailable) as exc:
            log.info("could not send the survey-expired follow-up: %s", exc)
