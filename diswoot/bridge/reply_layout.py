"""How an agent's Chatwoot message becomes Discord messages: routing ids, template
suppression, text chunks and file batches (pure functions, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from diswoot.bridge.chunking import chunk_text
from diswoot.bridge.delivery import FILES_FIELD, OutboundFile
from diswoot.bridge.downloads import filename_from_url
from diswoot.chatwoot.models import InboxConfig
from diswoot.config import Config

DISCORD_MESSAGE_LIMIT = 2000
DISCORD_MAX_FILES = 10
"""Files per message (discord.py's limit; Discord's docs do not state one)."""
DISCORD_REQUEST_LIMIT = 25 * 1024 * 1024
"""A whole create-message request (``discord-api.md`` §5.4)."""
REQUEST_RESERVE = 256 * 1024
"""Room kept in a request for ``payload_json`` and the multipart framing."""
UPLOADABLE = frozenset({"image", "audio", "video", "file"})
"""Chatwoot ``file_type`` values backed by a file (locations, contacts... are links)."""
_IDENTIFIER = re.compile(r"discord:([0-9]{15,21})")


def discord_id_from_identifier(identifier: str | None) -> str | None:
    """``"discord:80351110224678912"`` -> ``"80351110224678912"``; None for anything else."""
    match = _IDENTIFIER.fullmatch(identifier or "")
    return match.group(1) if match else None


def _normalise(text: str) -> str:
    """Text as Chatwoot's webhook normaliser leaves it (no hard-break backslashes, no padding)."""
    lines = (line.rstrip().removesuffix("\\").rstrip() for line in text.strip().splitlines())
    return "\n".join(lines).strip()


def is_inbox_template(content: str | None, inbox: InboxConfig | None) -> bool:
    """True when ``content`` is the inbox's greeting or out-of-office text."""
    if not content or inbox is None:
        return False
    text = _normalise(content)
    return any(
        template and _normalise(template) == text
        for template in (inbox.greeting_message, inbox.out_of_office_message)
    )


def upload_limit(cfg: Config) -> int:
    """The largest file uploaded to Discord (``DISCORD_UPLOAD_LIMIT_MB``), in bytes."""
    return cfg.discord_upload_limit_mb * 1024 * 1024


def reply_parts(payload: Mapping[str, Any], *, upload_limit: int) -> list[dict[str, Any]]:
    """The Discord messages carrying one agent reply, in order.

    Text is cut into chunks of at most 2,000 characters.  Files of at most ``upload_limit``
    bytes are uploaded, at most 10 and 25 MiB per message, the first batch with the last text
    chunk and the others right after it; larger files and attachments without a file (a
    location...) are linked by their permanent ``data_url`` after the text.  Every part keeps
    room for the links of its files, sent instead when an upload turns out impossible.
    """
    files: list[OutboundFile] = []
    sizes: list[int] = []
    links: list[str] = []
    for attachment in payload.get("attachments", []):
        url = attachment.get("data_url")
        if not isinstance(url, str) or not url:
            continue
        size = attachment.get("file_size")
        size = size if isinstance(size, int) and size >= 0 else None
        name = filename_from_url(url) or "file"
        kind = attachment.get("file_type") or "file"
        if kind not in UPLOADABLE or (size is not None and size > upload_limit):
            links.append(link_line(attachment.get("fallback_title") or name, url, size))
            continue
        content_type = attachment.get("content_type")
        files.append(
            OutboundFile(
                url=url,
                filename=name,
                content_type=content_type if isinstance(content_type, str) else None,
                link=link_line(name, url, size),
            )
        )
        sizes.append(size if size is not None else upload_limit)
    text = "\n".join(line for line in ((payload.get("content") or "").strip(), *links) if line)
    parts: list[dict[str, Any]] = [
        {"content": chunk} for chunk in chunk_text(text, DISCORD_MESSAGE_LIMIT) if chunk.strip()
    ]
    batches = _file_batches(files, sizes)
    if (
        batches
        and parts
        and len(parts[-1]["content"]) + _link_room(batches[0]) <= (DISCORD_MESSAGE_LIMIT)
    ):
        parts[-1][FILES_FIELD] = batches.pop(0)
    parts += [{FILES_FIELD: batch} for batch in batches]
    reply_to = payload.get("reply_to")
    if parts and reply_to:
        parts[0]["message_reference"] = {"message_id": reply_to, "fail_if_not_exists": False}
    return parts


def link_line(name: str, url: str, size: int | None) -> str:
    """``"📎 report.pdf (12.5 MB): https://..."``: a file sent as a link."""
    if size is None:
        return f"📎 {name}: {url}"
    return f"📎 {name} ({human_size(size)}): {url}"


def human_size(size: int) -> str:
    """``"12.5 MB"``, ``"48 KB"``, ``"512 bytes"`` (decimal units, as Discord shows them)."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1000:
        return f"{size // 1000} KB"
    return f"{size} bytes"


def _link_room(batch: list[OutboundFile]) -> int:
    return sum(len(f["link"]) + 1 for f in batch)


def _file_batches(files: list[OutboundFile], sizes: list[int]) -> list[list[OutboundFile]]:
    """Consecutive groups that fit one message: count, request size, and their link lines."""
    batches: list[list[OutboundFile]] = []
    current: list[OutboundFile] = []
    total = 0
    for f, size in zip(files, sizes, strict=True):
        full = (
            len(current) >= DISCORD_MAX_FILES
            or total + size > DISCORD_REQUEST_LIMIT - REQUEST_RESERVE
            or _link_room([*current, f]) > DISCORD_MESSAGE_LIMIT
        )
        if current and full:
            batches.append(current)
            current, total = [], 0
        current.append(f)
        total += size
    if current:
        batches.append(current)
    return batches
