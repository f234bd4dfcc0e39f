"""The files of a user's DM: fresh signed URLs, capped streaming uploads, link notes."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from diswoot.bridge.dm_content import dm_attachments
from diswoot.bridge.downloads import (
    DownloadFailed,
    DownloadStream,
    DownloadUnavailable,
    TooLarge,
    discord_cdn_policy,
    open_download,
)
from diswoot.chatwoot.models import Attachment
from diswoot.context import Context
from diswoot.rest.errors import DiscordHTTPError
from diswoot.tls import client_context

log = logging.getLogger("diswoot.inbound")

MIB = 1024 * 1024
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DOWNLOAD_ATTEMPTS = 6  # transient CDN failures before a file is sent as a link instead
EXPIRED_STATUSES = frozenset({403, 404, 410})  # an expired signed URL, or a deleted file


class AttachmentTooLarge(Exception):
    """A file grew past the cap while being uploaded (its size was not announced)."""

    def __init__(self, attachment_id: str) -> None:
        super().__init__(f"attachment {attachment_id} is larger than announced")
        self.attachment_id = attachment_id


@asynccontextmanager
async def dm_uploads(
    ctx: Context, message: dict[str, Any] | None, *, oversize: set[str], last_try: bool
) -> AsyncIterator[tuple[list[Attachment], list[str]]]:
    """The DM's files opened as upload streams, and notes for those sent as links.

    A file is a link instead when it is over ``ATTACHMENT_MAX_MB`` (announced, or in
    ``oversize``: found larger while an earlier upload ran) or cannot be fetched; a transient
    CDN failure is raised to retry the job, unless this is its ``last_try`` for downloads.
    """
    attachments = dm_attachments(message) if message is not None else []
    if message is None or not attachments:
        yield [], []
        return
    cap_mb = ctx.cfg.attachment_max_mb
    parts: list[Attachment] = []
    notes: list[str] = []
    async with (
        httpx.AsyncClient(
            timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, verify=client_context()
        ) as http,
        AsyncExitStack() as stack,
    ):
        files = DmFiles(ctx, message, http, stack, cap_mb * MIB)
        for attachment in attachments:
            too_large = f"is larger than {cap_mb} MB"
            why: str | None = None
            if int(attachment.get("size") or 0) > cap_mb * MIB:
                why = too_large
            elif str(attachment.get("id")) in oversize:
                why = too_large
            else:
                try:
                    stream = await files.open(attachment)
                except TooLarge:
                    why = too_large
                except DownloadFailed as exc:
                    why = f"could not be downloaded ({exc})"
                except DownloadUnavailable as exc:
                    if not last_try:
                        raise
                    why = f"could not be downloaded ({exc})"
            if why is not None:
                notes.append(link_note(attachment, why, await files.url(attachment)))
                continue
            chunks = guarded_chunks(stream, str(attachment.get("id")))
            stack.push_async_callback(chunks.aclose)  # also when the upload failed
            name = str(attachment.get("filename") or "file")
            parts.append(Attachment(name, media_type(attachment, stream), chunks))
        yield parts, notes


class DmFiles:
    """Opens the attachments of one DM, re-fetching the message once for fresh CDN URLs.

    Only Discord's CDN (or DISCORD_API_BASE_URL's origin) is ever asked for a file.
    """

    def __init__(
        self,
        ctx: Context,
        message: dict[str, Any],
        http: httpx.AsyncClient,
        stack: AsyncExitStack,
        max_bytes: int,
    ) -> None:
        self._ctx = ctx
        self._message = message
        self._http = http
        self._stack = stack
        self._max_bytes = max_bytes
        self._policy = discord_cdn_policy(ctx.cfg)
        self._fresh: dict[str, str] | None = None

    async def url(self, attachment: dict[str, Any]) -> str:
        """The attachment's URL; a fresh one once its signature has expired (``ex``)."""
        url = str(attachment.get("url") or "")
        expires = expiry(url)
        if expires is not None and expires <= self._ctx.clock():
            url = (await self._fresh_urls()).get(str(attachment.get("id")), url)
        return url

    async def open(self, attachment: dict[str, Any]) -> DownloadStream:
        """The download, retried once with a fresh URL when Discord's CDN refuses the URL."""
        url = await self.url(attachment)
        try:
            return await self._open(url)
        except DownloadFailed as exc:
            if exc.status not in EXPIRED_STATUSES:
                raise
            fresh = (await self._fresh_urls()).get(str(attachment.get("id")))
            if fresh is None:
                raise DownloadFailed("deleted in Discord", exc.status) from exc
            if fresh == url:
                raise
        return await self._open(fresh)

    async def _open(self, url: str) -> DownloadStream:
        return await self._stack.enter_async_context(
            open_download(self._http, url, max_bytes=self._max_bytes, policy=self._policy)
        )

    async def _fresh_urls(self) -> dict[str, str]:
        """Attachment id -> URL from the message as Discord serves it now ({} if deleted)."""
        if self._fresh is None:
            message_id, channel_id = str(self._message["id"]), str(self._message["channel_id"])
            try:  # the one message right after id - 1 is the message itself, if it still exists
                page = await self._ctx.discord.list_messages(
                    channel_id, after=str(int(message_id) - 1), limit=1
                )
            except DiscordHTTPError as exc:
                if not exc.permanent:
                    raise
                page = []
            found = next((m for m in page if str(m.get("id")) == message_id), None)
            self._fresh = {
                str(a.get("id")): str(a.get("url")) for a in dm_attachments(found or {})
            }
            log.info("message %s: re-fetched %d attachment URL(s)", message_id, len(self._fresh))
        return self._fresh


async def guarded_chunks(stream: DownloadStream, attachment_id: str) -> AsyncGenerator[bytes, None]:
    """The file's bytes; an overrun of the cap names the attachment (see ``handle``)."""
    try:
        async with aclosing(stream.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk
    except TooLarge as exc:
        raise AttachmentTooLarge(attachment_id) from exc


def media_type(attachment: dict[str, Any], stream: DownloadStream) -> str:
    """The part's Content-Type (Chatwoot derives ``file_type`` from it)."""
    return str(attachment.get("content_type") or stream.content_type or "application/octet-stream")


def expiry(url: str) -> float | None:
    """When a signed Discord CDN URL expires (its hex ``ex`` parameter), if it says."""
    expires = parse_qs(urlsplit(url).query).get("ex")
    try:
        return float(int(expires[0], 16)) if expires else None
    except ValueError:
        return None


def link_note(attachment: dict[str, Any], why: str, url: str) -> str:
    """A note for agents above the link to a file that was not uploaded."""
    name = str(attachment.get("filename") or "file")
    size = int(attachment.get("size") or 0)
    details = [f"{math.ceil(size * 10 / MIB) / 10:.1f} MB"] if size else []  # never rounded down
    expires = expiry(url)
    if expires is not None:
        with contextlib.suppress(OverflowError, OSError, ValueError):  # a nonsensical ex
            until = datetime.fromtimestamp(expires, UTC)
            details.append(f"link valid until {until:%Y-%m-%d %H:%M} UTC")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"📎 {name} {why}, so it was not uploaded{suffix}:\n{url}"
