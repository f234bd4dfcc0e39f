"""Sending the messages of one outbound job to a user's DM: in order, once, resumable.

Each part in ``payload["parts"]`` is sent with a nonce derived from the job id and its index, and
its progress is committed with its message link, so a retried POST returns the message Discord
already created and a restart resumes after the last part that reached Discord.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

import httpx

from diswoot.bridge.downloads import DownloadFailed, TooLarge, chatwoot_media_policy, download
from diswoot.bridge.jobs import Finished
from diswoot.context import Context
from diswoot.rest.client import UploadFile
from diswoot.rest.errors import DiscordHTTPError, RequestWithdrawn
from diswoot.store import Job
from diswoot.store import queries as q
from diswoot.tls import client_context

log = logging.getLogger("diswoot.delivery")

SEND_FIELDS = ("content", "embeds", "components", "allowed_mentions", "message_reference")
"""Keys of a part passed on to :meth:`DiscordRest.send_message`."""
FILES_FIELD = "files"
REQUEST_TOO_LARGE = 413
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class OutboundFile(TypedDict):
    """One file of a part, as stored in the job (JSON)."""

    url: str
    """The permanent address to download (Chatwoot's ``data_url``)."""
    filename: str
    content_type: str | None
    link: str
    """The line sent instead of the file when it cannot be uploaded."""


@dataclass(frozen=True)
class Withdrawn:
    """``still_wanted`` said no before a part was sent (an agent deleted the reply); the
    parts sent before stay recorded, for the deletion to find."""


@dataclass(frozen=True)
class Undeliverable:
    """Discord refused for good (e.g. 50007); ``reason`` is written for agents."""

    reason: str


class Ending(NamedTuple):
    """How a job ends, written with its last part: its result (read when the last part is
    recorded, so it may refer to ``payload["sent"]``) and the job it leads to, which
    ``schedule`` gets once stored."""

    result: dict[str, Any]
    then: q.JobToAdd
    schedule: Callable[[Job], None]


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
    dropped = sorted(set(part) - {*SEND_FIELDS, FILES_FIELD})
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
    ending: Ending | None = None,
    still_wanted: Callable[[], bool] | None = None,
) -> Undeliverable | Withdrawn | Finished | None:
    """Send the parts not sent yet; ``Undeliverable`` on a permanent refusal, ``Withdrawn``
    when ``still_wanted`` says no right before a part would be sent (after any rate-limit wait).

    With ``ending``, the job ends in the transaction that records its last part (returns
    ``Finished``); None: every part was sent before, the job is not ended here.
    Transient failures (429, 5xx, network, a download that failed for now) propagate (the
    queue retries them); the parts already sent stay sent.
    """
    parts: list[dict[str, Any]] = job.payload["parts"]
    sent: list[str] = job.payload.setdefault("sent", [])
    if len(sent) >= len(parts):
        return None
    try:
        channel_id = await ctx.discord.create_dm(discord_id)
        while len(sent) < len(parts):
            index = len(sent)
            part = parts[index]
            kwargs = send_kwargs(part)
            uploads: list[UploadFile] = []
            if part.get(FILES_FIELD):
                uploads, links = await fetch_files(ctx, part[FILES_FIELD])
                kwargs["content"] = join_lines(kwargs.get("content"), links)
            try:
                message = await ctx.discord.send_message(
                    channel_id,
                    nonce=nonce_for(job.id, index),
                    files=uploads,
                    still_wanted=still_wanted,
                    **kwargs,
                )
            except RequestWithdrawn:
                return Withdrawn()
            except DiscordHTTPError as exc:
                if exc.status != REQUEST_TOO_LARGE or not uploads:
                    raise
                log.warning("Discord refused the upload (%s); sending links instead", exc)
                parts[index] = files_as_links(part)
                await ctx.store.call(q.update_job_payload, job.id, job.payload)
                continue
            sent.append(str(message["id"]))
            last = ending if len(sent) == len(parts) else None
            added = await ctx.store.call(
                q.record_outbound_part,
                job.id,
                job.payload,
                str(message["id"]),
                channel_id,
                chatwoot_message_id,
                conversation_id,
                ctx.clock(),
                ending=None if last is None else (last.result, last.then),
            )
            if last is not None:
                if added is not None:
                    last.schedule(added)
                return Finished(last.result)
    except DiscordHTTPError as exc:
        if exc.transient:
            raise
        return Undeliverable(describe(exc))
    return None


def join_lines(content: str | None, lines: Sequence[str]) -> str | None:
    """``content`` with ``lines`` appended, one per line (None when both are empty)."""
    text = "\n".join([line for line in (content or "", *lines) if line])
    return text or None


def files_as_links(part: dict[str, Any]) -> dict[str, Any]:
    """The part with every file replaced by its link line."""
    files: list[OutboundFile] = part.get(FILES_FIELD) or []
    plain = {k: v for k, v in part.items() if k != FILES_FIELD}
    plain["content"] = join_lines(plain.get("content"), [f["link"] for f in files])
    return plain


async def fetch_files(
    ctx: Context, files: Sequence[OutboundFile]
) -> tuple[list[UploadFile], list[str]]:
    """Download ``files`` for upload; the link lines of those that must stay links.

    Files are fetched only from Chatwoot's origin or CHATWOOT_MEDIA_HOSTS (redirects
    included); any other URL stays a link and is never requested.  Raises
    :class:`DownloadUnavailable` when a download failed for now.
    """
    limit = ctx.cfg.discord_upload_limit_mb * 1024 * 1024
    policy = chatwoot_media_policy(ctx.cfg)
    uploads: list[UploadFile] = []
    links: list[str] = []
    async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, verify=client_context()) as http:
        for f in files:
            try:
                got = await download(http, f["url"], max_bytes=limit, policy=policy)
            except TooLarge:
                links.append(f["link"])
                continue
            except DownloadFailed as exc:
                log.warning("attachment not uploaded, linked instead: %s", exc)
                links.append(f["link"])
                continue
            content_type = f["content_type"] or got.content_type or "application/octet-stream"
            uploads.append(UploadFile(f["filename"], content_type, got.data))
    return uploads, links
