"""Typed views of Chatwoot data: the API inbox's settings and webhook events.

The webhook parser smooths over the differences ``chatwoot-api.md`` §2 lists: account and inbox
ids live at the top level of message events but inside ``conversation`` for typing events and
*are* the body for conversation events; ``message_type`` is a string in message webhooks and an
integer elsewhere; timestamps are ISO-8601 strings, Unix integers or Unix floats depending on the
field. Every timestamp here is normalised to Unix seconds (float).  Each field the bridge uses
is type-checked; a bad one raises ``FieldError`` naming it (the webhook answers 400).
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from diswoot import untrusted as check
from diswoot.chatwoot.hours import WorkingHours

MESSAGE_TYPES = ("incoming", "outgoing", "activity", "template")
"""REST ``message_type`` integers index into this tuple (0 incoming ... 3 template)."""

MessageEventName = Literal["message_created", "message_updated"]
ConversationEventName = Literal[
    "conversation_status_changed", "conversation_updated", "conversation_created"
]
TypingEventName = Literal["conversation_typing_on", "conversation_typing_off"]

_MESSAGE_EVENTS = ("message_created", "message_updated")
_CONVERSATION_EVENTS = (
    "conversation_status_changed",
    "conversation_updated",
    "conversation_created",
)
_TYPING_EVENTS = ("conversation_typing_on", "conversation_typing_off")


@dataclass(frozen=True)
class Contact:
    """A created contact: its id, the source_id of its contact_inbox in our inbox, the raw JSON."""

    id: int
    source_id: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class Attachment:
    """A file to upload with a message; ``data`` may be bytes or an async byte stream."""

    filename: str
    content_type: str
    data: bytes | AsyncIterable[bytes]


@dataclass(frozen=True)
class InboxConfig:
    """The settings of the API inbox that matter to the bridge (GET ``/inboxes/{id}``)."""

    id: int
    name: str
    timezone: str
    working_hours_enabled: bool
    working_hours: list[dict[str, Any]]
    greeting_enabled: bool
    greeting_message: str | None
    out_of_office_message: str | None
    csat_survey_enabled: bool
    lock_to_single_conversation: bool
    inbox_identifier: str | None
    channel_type: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> InboxConfig:
        """Parse the unwrapped inbox JSON; missing optional keys take Chatwoot's defaults."""
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), int):
            raise ValueError("inbox JSON has no integer id")
        hours = data.get("working_hours") or []
        if not isinstance(hours, list):
            raise ValueError("inbox working_hours is not a list")
        return cls(
            id=data["id"],
            name=str(data.get("name") or ""),
            timezone=str(data.get("timezone") or "UTC"),
            working_hours_enabled=bool(data.get("working_hours_enabled")),
            working_hours=[dict(h) for h in hours],
            greeting_enabled=bool(data.get("greeting_enabled")),
            greeting_message=data.get("greeting_message") or None,
            out_of_office_message=data.get("out_of_office_message") or None,
            csat_survey_enabled=bool(data.get("csat_survey_enabled")),
            lock_to_single_conversation=bool(data.get("lock_to_single_conversation")),
            inbox_identifier=data.get("inbox_identifier") or None,
            channel_type=str(data.get("channel_type") or ""),
            raw=dict(data),
        )

    @functools.cached_property
    def hours(self) -> WorkingHours:
        """The inbox's working hours, parsed once per fetched inbox (not once per DM)."""
        return WorkingHours.from_inbox(self.raw)


@dataclass(frozen=True)
class MessageEvent:
    """``message_created`` / ``message_updated``: one message, with its conversation's context."""

    event: MessageEventName
    message_id: int
    conversation_id: int
    account_id: int
    inbox_id: int
    message_type: str
    private: bool
    content: str | None
    content_type: str
    content_attributes: dict[str, Any]
    attachments: list[dict[str, Any]]
    sender: dict[str, Any] | None
    contact_identifier: str | None
    conversation_status: str | None
    created_at: float | None

    @property
    def deleted(self) -> bool:
        """Chatwoot soft-deleted the message (``content_attributes.deleted``)."""
        return bool(self.content_attributes.get("deleted"))

    @property
    def external_error(self) -> str | None:
        """The delivery error shown to agents, when the message is marked failed."""
        value = self.content_attributes.get("external_error")
        return str(value) if value else None


@dataclass(frozen=True)
class ConversationEvent:
    """``conversation_created`` / ``conversation_updated`` / ``conversation_status_changed``."""

    event: ConversationEventName
    conversation_id: int
    account_id: int
    inbox_id: int
    status: str
    previous_status: str | None
    contact_identifier: str | None
    last_activity_at: float | None
    updated_at: float | None
    uuid: str | None
    changed: frozenset[str] = frozenset()
    """Names of the attributes listed in ``changed_attributes`` (empty when null)."""


@dataclass(frozen=True)
class TypingEvent:
    """``conversation_typing_on`` / ``conversation_typing_off``."""

    event: TypingEventName
    conversation_id: int
    account_id: int
    inbox_id: int
    is_private: bool
    user: dict[str, Any]
    is_contact: bool

    @property
    def on(self) -> bool:
        return self.event == "conversation_typing_on"


WebhookEvent = MessageEvent | ConversationEvent | TypingEvent


def parse_webhook(body: Any) -> WebhookEvent | None:
    """Parse one webhook body; ``None`` for events the bridge does not use.

    Every field the bridge uses is checked: a missing id or a value of the wrong type raises
    :class:`~diswoot.untrusted.FieldError` (a ``ValueError``) naming the field.
    """
    if not isinstance(body, Mapping):
        raise ValueError("webhook body is not a JSON object")
    event = check.string(body.get("event"), "event")
    if event in _MESSAGE_EVENTS:
        return _message_event(event, body)
    if event in _CONVERSATION_EVENTS:
        return _conversation_event(event, body)
    if event in _TYPING_EVENTS:
        return _typing_event(event, body)
    return None


def _message_event(event: Any, body: Mapping[str, Any]) -> MessageEvent:
    conversation = check.obj(body.get("conversation"), "conversation")
    contact_identifier = _check_conversation(conversation, "conversation.")
    account_id = check.opt_obj(body.get("account"), "account").get("id")
    if account_id is None:
        account_id = check.opt_obj(conversation.get("account"), "conversation.account").get("id")
    inbox_id = check.opt_obj(body.get("inbox"), "inbox").get("id")
    if inbox_id is None:
        inbox_id = conversation.get("inbox_id")
    attributes = check.opt_obj(body.get("content_attributes"), "content_attributes")
    check.opt_bool(attributes.get("deleted"), "content_attributes.deleted")
    check.opt_str(attributes.get("external_error"), "content_attributes.external_error")
    check.opt_str(
        attributes.get("in_reply_to_external_id"), "content_attributes.in_reply_to_external_id"
    )
    try:
        message_type = message_type_name(body.get("message_type"))
    except ValueError:
        expected = f"one of {', '.join(MESSAGE_TYPES)} (or 0-3)"
        raise check.FieldError("message_type", expected) from None
    return MessageEvent(
        event=event,
        message_id=check.ident(body.get("id"), "id"),
        conversation_id=check.ident(conversation.get("id"), "conversation.id"),
        account_id=check.ident(account_id, "account.id"),
        inbox_id=check.ident(inbox_id, "inbox.id"),
        message_type=message_type,
        private=check.opt_bool(body.get("private"), "private"),
        content=check.opt_str(body.get("content"), "content"),
        content_type=check.opt_str(body.get("content_type"), "content_type") or "text",
        content_attributes=dict(attributes),
        attachments=_attachments(body.get("attachments")),
        sender=None if body.get("sender") is None else dict(check.obj(body["sender"], "sender")),
        contact_identifier=contact_identifier,
        conversation_status=check.opt_str(conversation.get("status"), "conversation.status"),
        created_at=_timestamp(body.get("created_at"), "created_at"),
    )


def _attachments(value: Any) -> list[dict[str, Any]]:
    """The attachment objects, with the fields the bridge reads checked."""
    items = check.objects(value, "attachments")
    for i, item in enumerate(items):
        for key in ("data_url", "file_type", "content_type", "fallback_title"):
            check.opt_str(item.get(key), f"attachments[{i}].{key}")
        check.size(item.get("file_size"), f"attachments[{i}].file_size")
    return [dict(item) for item in items]


def _conversation_event(event: Any, body: Mapping[str, Any]) -> ConversationEvent:
    account_id = check.opt_obj(body.get("account"), "account").get("id", body.get("account_id"))
    changed = _changed_attributes(body.get("changed_attributes"))
    previous = changed.get("status", {}).get("previous_value")
    return ConversationEvent(
        event=event,
        conversation_id=check.ident(body.get("id"), "id"),
        account_id=check.ident(account_id, "account.id"),
        inbox_id=check.ident(body.get("inbox_id"), "inbox_id"),
        status=check.string(body.get("status"), "status"),
        previous_status=previous if isinstance(previous, str) else None,
        contact_identifier=_check_conversation(body, ""),
        last_activity_at=_timestamp(body.get("last_activity_at"), "last_activity_at"),
        updated_at=_timestamp(body.get("updated_at"), "updated_at"),
        uuid=check.opt_str(body.get("uuid"), "uuid"),
        changed=frozenset(changed),
    )


def _typing_event(event: Any, body: Mapping[str, Any]) -> TypingEvent:
    conversation = check.obj(body.get("conversation"), "conversation")
    _check_conversation(conversation, "conversation.")
    user = check.opt_obj(body.get("user"), "user")
    user_type = check.opt_str(user.get("type", "contact"), "user.type")
    account = check.opt_obj(conversation.get("account"), "conversation.account")
    return TypingEvent(
        event=event,
        conversation_id=check.ident(conversation.get("id"), "conversation.id"),
        account_id=check.ident(account.get("id"), "conversation.account.id"),
        inbox_id=check.ident(conversation.get("inbox_id"), "conversation.inbox_id"),
        is_private=check.opt_bool(body.get("is_private"), "is_private"),
        user=dict(user),
        # A contact's webhook_data has no "type" key (removed in 2.15.0).
        is_contact=user_type == "contact",
    )


def message_type_name(value: Any) -> str:
    """``"incoming"`` for ``0`` or ``"incoming"``, and so on; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"bad message_type {value!r}")
    if isinstance(value, int) and 0 <= value < len(MESSAGE_TYPES):
        return MESSAGE_TYPES[value]
    if isinstance(value, str) and value in MESSAGE_TYPES:
        return value
    raise ValueError(f"bad message_type {value!r}")


def to_epoch(value: Any) -> float | None:
    """Unix seconds from an int/float epoch, a numeric string or an ISO-8601 string.

    ValueError for anything else that is not null, and for values that are not finite.
    """
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = _epoch_from_text(value)
        else:
            raise ValueError(f"not a timestamp: {type(value).__name__}")
    except OverflowError:
        raise ValueError(f"timestamp out of range: {value!r:.40}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp out of range: {value!r:.40}")
    return seconds


def _epoch_from_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OSError):
        raise ValueError(f"bad timestamp {text!r:.40}") from None


def _timestamp(value: Any, field: str) -> float | None:
    try:
        return to_epoch(value)
    except ValueError:
        raise check.FieldError(field, "a Unix time or an ISO-8601 timestamp") from None


def _changed_attributes(raw: Any) -> dict[str, dict[str, Any]]:
    """``[{"status": {"previous_value", "current_value"}}, ...]`` (or one dict) as a dict."""
    items = [raw] if isinstance(raw, Mapping) else check.objects(raw, "changed_attributes")
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        for key, change in item.items():
            out[str(key)] = dict(change) if isinstance(change, Mapping) else {}
        name = f"changed_attributes[{i}].status"
        status = check.opt_obj(item.get("status"), name)
        check.opt_str(status.get("previous_value"), f"{name}.previous_value")
    return out


def _check_conversation(conversation: Mapping[str, Any], prefix: str) -> str | None:
    """Check the conversation fields used to route it; its contact's identifier."""
    meta = check.opt_obj(conversation.get("meta"), f"{prefix}meta")
    sender = check.opt_obj(meta.get("sender"), f"{prefix}meta.sender")
    check.opt_ident(sender.get("id"), f"{prefix}meta.sender.id")
    contact_inbox = check.opt_obj(conversation.get("contact_inbox"), f"{prefix}contact_inbox")
    check.opt_str(contact_inbox.get("source_id"), f"{prefix}contact_inbox.source_id")
    identifier = check.opt_str(sender.get("identifier"), f"{prefix}meta.sender.identifier")
    return identifier or None


__all__ = [
    "MESSAGE_TYPES",
    "Attachment",
    "Contact",
    "ConversationEvent",
    "InboxConfig",
    "MessageEvent",
    "TypingEvent",
    "WebhookEvent",
    "message_type_name",
    "parse_webhook",
    "to_epoch",
]
