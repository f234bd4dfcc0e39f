"""Sending the messages of one outbound job to a user's DM: in order, once, resumable.

A job's ``payload["parts"]`` is a list of Discord create-message bodies.  Each part is sent
with a nonce derived from the job id and the part's index plus ``enforce_nonce``, so a POST
retried after a lost answer returns the message Discord already created; after each part the
progress (``payload["sent"]``) and the message link are committed in one transaction, so a
restart resumes after the last part that reached Discord.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from diswoot.bridge.jobs import RetryLater
from diswoot.context import Context
from diswoot.rest.errors import DiscordHTTPError, DiscordRateLimited, DiscordUnavailable
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.delivery")

SEND_FIELDS = ("content", "embeds", "components", "allowed_mentions", "message_reference")
"""Keys of a part passed on to :meth:`DiscordRest.send_message`."""


@dataclass(frozen=True)
class Undeliverable:
    """Discord refused for good (e.g. 50007); ``reason`` is written for agents."""

    reason: str


def nonce_for(job_id: int, index: int) -> str:
    """A nonce stable across retries and restarts (Discord allows at most 25 characters)."""
    return f"dw{job_id}.{index}"


def describe(exc: DiscordHTTPError) -> str:
    """``"Discord: Cannot send messages to this user (50007)"``."""
    if exc.code is not None:
        return f"Discord: {exc.message} ({exc.code})"
    return f"Discord: HTTP {exc.status} {exc.message}".rstrip()


def send_kwargs(part: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``send_message`` for one stored part (unknown keys are dropped)."""
    dropped = sorted(set(part) - set(SEND_FIELDS))
    if dropped:
        log.warning("outbound message fields not supported, dropped: %s", ", ".join(dropped))
    return {key: part[key] for key in SEND_FIELDS if part.get(key) is not None}


async def deliver_parts(
    ctx: Context,
    job: Job,
    discord_id: str,
    *,
    chatwoot_message_id: int | None = None,
    conversation_id: int | None = None,
) -> Undeliverable | None:
    """Send the parts not sent yet; ``Undeliverable`` on a permanent refusal.

    Transient failures (429, 5xx, network) raise :class:`RetryLater`; the parts already sent
    stay sent.
    """
    parts: list[dict[str, Any]] = job.payload["parts"]
    sent: list[str] = job.payload.setdefault("sent", [])
    if len(sent) >= len(parts):
        return None
    try:
        channel_id = await ctx.discord.create_dm(discord_id)
        for index in range(len(sent), len(parts)):
            message = await ctx.discord.send_message(
                channel_id, nonce=nonce_for(job.id, index), **send_kwargs(parts[index])
            )
            sent.append(str(message["id"]))
            await ctx.store.call(
                q.record_outbound_part,
                job.id,
                job.payload,
                str(message["id"]),
                channel_id,
                chatwoot_message_id,
                conversation_id,
                ctx.clock(),
            )
    except DiscordRateLimited as exc:
        raise RetryLater(str(exc), delay=exc.retry_after) from exc
    except DiscordHTTPError as exc:
        if exc.permanent:
            return Undeliverable(describe(exc))
        raise RetryLater(str(exc)) from exc
    except DiscordUnavailable as exc:
        raise RetryLater(str(exc)) from exc
    return None
