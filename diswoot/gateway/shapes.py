"""Shape checks for the JSON of incoming gateway dispatches.

Each check raises :class:`MalformedEvent` naming the field that is wrong, never its value (a
value may be message content).  Only what diswoot reads is checked; unknown fields pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

MAX_SNOWFLAKE = (1 << 64) - 1
MAX_SNOWFLAKE_DIGITS = 20


class MalformedEvent(ValueError):
    """A dispatch whose shape diswoot cannot use; ``str()`` names the field, not the value."""


def is_snowflake(value: object) -> TypeGuard[str]:
    """A Discord id as the JSON API sends it: a decimal string of a 64-bit unsigned int."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SNOWFLAKE_DIGITS
        and value.isascii()
        and value.isdigit()
        and int(value) <= MAX_SNOWFLAKE
    )


def is_int(value: object) -> bool:
    """A JSON integer (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def an_object(value: object, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where} is not an object")
    return value


def snowflake(d: Mapping[str, Any], key: str, where: str = "") -> str:
    """The required snowflake ``d[key]``."""
    value = d.get(key)
    if not is_snowflake(value):
        raise MalformedEvent(f"{where}{key} is not a snowflake string")
    assert isinstance(value, str)
    return value


_JSON_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "an array"}


def optional(d: Mapping[str, Any], key: str, kind: type, where: str = "") -> None:
    """``d[key]``, when present and not null, must be a ``kind`` (a JSON int is never a bool)."""
    value = d.get(key)
    if value is None:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"{where}{key} is not {_JSON_NAMES.get(kind, kind.__name__)}")


def objects(d: Mapping[str, Any], key: str, where: str = "") -> list[dict[str, Any]]:
    """``d[key]`` as a list of objects (absent or null: empty)."""
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedEvent(f"{where}{key} is not an array of objects")
    return value


def check_message_body(d: Mapping[str, Any], where: str = "") -> None:
    """The parts of a message (or a forward's snapshot) that the bridge renders."""
    optional(d, "content", str, where)
    optional(d, "flags", int, where)
    optional(d, "type", int, where)
    optional(d, "edited_timestamp", str, where)
    optional(d, "embeds", list, where)
    for i, attachment in enumerate(objects(d, "attachments", where)):
        at = f"{where}attachments[{i}]."
        snowflake(attachment, "id", at)
        optional(attachment, "filename", str, at)
        optional(attachment, "url", str, at)
        optional(attachment, "proxy_url", str, at)
        optional(attachment, "content_type", str, at)
        optional(attachment, "size", int, at)
    for i, sticker in enumerate(objects(d, "sticker_items", where)):
        optional(sticker, "name", str, f"{where}sticker_items[{i}].")


def check_message(d: Mapping[str, Any], *, author_required: bool = True) -> None:
    """A MESSAGE_CREATE/UPDATE ``d``: ids, author, and the shapes of what gets rendered."""
    snowflake(d, "id")
    snowflake(d, "channel_id")
    author = d.get("author")
    if author is not None or author_required:
        snowflake(an_object(author, "author"), "id", "author.")
    check_message_body(d)
    reference = d.get("message_reference")
    if reference is not None:
        an_object(reference, "message_reference")
        optional(reference, "type", int, "message_reference.")
        if reference.get("message_id") is not None:
            snowflake(reference, "message_id", "message_reference.")
    referenced = d.get("referenced_message")  # null when the original was deleted
    if referenced is not None:
        an_object(referenced, "referenced_message")
    for i, snapshot in enumerate(objects(d, "message_snapshots")):
        check_message_body(an_object(snapshot.get("message"), f"message_snapshots[{i}].message"),
                           f"message_snapshots[{i}].message.")
    _check_poll(d.get("poll"))


def _check_poll(poll: object) -> None:
    if poll is None:
        return
    poll = an_object(poll, "poll")
    question = poll.get("question")
    if question is not None:
        optional(an_object(question, "poll.question"), "text", str, "poll.question.")
    for i, answer in enumerate(objects(poll, "answers", "poll.")):
        media = answer.get("poll_media")
        if media is not None:
            optional(an_object(media, f"poll.answers[{i}].poll_media"), "text", str,
                     f"poll.answers[{i}].poll_media.")
