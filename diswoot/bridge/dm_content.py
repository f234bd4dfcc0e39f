"""What an agent sees of a Discord DM: its text, and the files to upload with it (pure).

Besides plain text this carries the DMs whose words are elsewhere: a forward's text and files
live in ``message_snapshots``, a poll's question and answers in ``poll``, a sticker is only a
name, a voice message is an audio attachment with a flag.  Nothing here raises on odd shapes:
a field of the wrong type is treated as absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

IS_VOICE_MESSAGE = 1 << 13
HAS_SNAPSHOT = 1 << 14
REFERENCE_FORWARD = 1


def dm_text(message: Mapping[str, Any]) -> str:
    """The DM as text for Chatwoot (files are uploaded separately, see :func:`dm_attachments`)."""
    lines: list[str] = []
    if _referenced_deleted(message):
        lines.append("↩️ (in reply to a message that was deleted)")
    lines.extend(_own_lines(message, forwarded=False))
    for snapshot in _snapshots(message):
        lines.append("↪️ Forwarded message:")
        quoted = "\n".join(_own_lines(snapshot, forwarded=True)).splitlines()
        lines.extend(f"> {line}" if line else ">" for line in quoted)
    return "\n".join(lines)


def dm_attachments(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The DM's files (its own, then those it forwards), with well-typed id, name, size, type.

    An entry without a URL cannot be fetched and is left out.
    """
    entries = list(_list(message.get("attachments")))
    for snapshot in _snapshots(message):
        entries.extend(_list(snapshot.get("attachments")))
    return [file for file in map(_file, entries) if file is not None]


def _file(entry: Any) -> dict[str, Any] | None:
    attachment = _mapping(entry)
    url = _text(attachment.get("url"))
    if not url:
        return None
    size = _int(attachment.get("size"))
    return {
        **attachment,
        "id": str(attachment.get("id", "")),
        "filename": _text(attachment.get("filename")) or "file",
        "size": max(size, 0),
        "url": url,
        "content_type": _text(attachment.get("content_type")) or None,
    }


def _own_lines(message: Mapping[str, Any], *, forwarded: bool) -> list[str]:
    """Content, voice-message marker, poll and stickers of one message or snapshot.

    A forward's embeds (a link preview, a bot's card) are part of what was forwarded; a DM's
    own embeds are only unfurls of links already in its text.
    """
    lines: list[str] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        lines.append(content)
    if _int(message.get("flags")) & IS_VOICE_MESSAGE:
        lines.append(_voice_line(message))
    poll = message.get("poll")
    if isinstance(poll, dict):
        lines.extend(_poll_lines(poll))
    for sticker in _list(message.get("sticker_items")):
        if isinstance(sticker, dict):
            lines.append(f"[sticker: {_text(sticker.get('name')) or '?'}]")
    if forwarded:
        lines.extend(_embed_lines(message))
    return lines


def _voice_line(message: Mapping[str, Any]) -> str:
    audio = next((a for a in _list(message.get("attachments")) if isinstance(a, dict)), {})
    seconds = audio.get("duration_secs")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        whole = round(seconds)
        return f"🎤 Voice message ({whole // 60}:{whole % 60:02d})"
    return "🎤 Voice message"


def _poll_lines(poll: Mapping[str, Any]) -> list[str]:
    question = _text(_mapping(poll.get("question")).get("text")) or "(no question)"
    lines = [f"📊 Poll: {question}"]
    for number, answer in enumerate(_list(poll.get("answers")), 1):
        media = _mapping(_mapping(answer).get("poll_media"))
        emoji = _text(_mapping(media.get("emoji")).get("name"))
        text = " ".join(part for part in (emoji, _text(media.get("text"))) if part)
        lines.append(f"{number}. {text or '(no text)'}")
    if poll.get("allow_multiselect") is True:
        lines.append("(several answers may be chosen)")
    return lines


def _embed_lines(message: Mapping[str, Any]) -> Iterator[str]:
    """Embeds as their title, text and link."""
    for embed in _list(message.get("embeds")):
        embed = _mapping(embed)
        for key in ("title", "description", "url"):
            value = _text(embed.get(key))
            if value:
                yield value


def _snapshots(message: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The forwarded messages (``message_snapshots[].message``), if this DM is a forward."""
    reference = _mapping(message.get("message_reference"))
    forwarded = reference.get("type") == REFERENCE_FORWARD or (
        _int(message.get("flags")) & HAS_SNAPSHOT
    )
    if not forwarded:
        return
    for snapshot in _list(message.get("message_snapshots")):
        inner = _mapping(_mapping(snapshot).get("message"))
        if inner:
            yield inner


def _referenced_deleted(message: Mapping[str, Any]) -> bool:
    """A reply whose original is gone: ``referenced_message`` is present and null."""
    reference = _mapping(message.get("message_reference"))
    return (
        reference.get("type", 0) == 0
        and "message_id" in reference
        and "referenced_message" in message
        and message["referenced_message"] is None
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
