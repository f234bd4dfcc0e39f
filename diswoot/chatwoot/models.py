"""Typed views of Chatwoot data: the API inbox's settings and webhook events.

The webhook parser smooths over the differences ``chatwoot-api.md`` §2 lists: account and inbox
ids live at the top level of message events but inside ``conversation`` for typing events and
*are* the body for conversation events; ``message_type`` is a string in message webhooks and an
integer elsewhere; timestamps are ISO-8601 strings, Unix integers or Unix floats depending on the
field. Every timestamp here is normalised to Unix seconds (float).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

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

    Raises ``ValueError`` when the body is not a JSON object, has no ``event`` or lacks the ids
    its event type must carry.
    """
    if not isinstance(body, Mapping):
        raise ValueError("webhook body is not a JSON object")
    event = body.get("event")
    if not isinstance(event, str):
        raise ValueError("webhook body has no event name")
    if event in _MESSAGE_EVENTS:
        return _message_event(event, body)
    if event in _CONVERSATION_EVENTS:
        return _conversation_event(event, body)
    if event in _TYPING_EVENTS:
        return _typing_event(event, body)
    return None


def _message_event(event: Any, body: Mapping[str, Any]) -> MessageEvent:
    conversation = _mapping(body.get("conversation"), "conversation")
    account = body.get("account")
    inbox = body.get("inbox")
    account_id = account.get("id") if isinstance(account, Mapping) else None
    if account_id is None:
        account_id = _optional_mapping(conversation.get("account")).get("id")
    inbox_id = inbox.get("id") if isinstance(inbox, Mapping) else conversation.get("inbox_id")
    sender = body.get("sender")
    attachments = body.get("attachments") or []
    content_attributes = body.get("content_attributes") or {}
    if not isinstance(attachments, list) or not isinstance(content_attributes, Mapping):
        raise ValueError("message attachments/content_attributes have the wrong type")
    content = body.get("content")
    return MessageEvent(
        event=event,
        message_id=_int(body.get("id"), "id"),
        conversation_id=_int(conversation.get("id"), "conversation.id"),
        account_id=_int(account_id, "account.id"),
        inbox_id=_int(inbox_id, "inbox.id"),
        message_type=message_type_name(body.get("message_type")),
        private=bool(body.get("private")),
        content=content if isinstance(content, str) else None,
        content_type=str(body.get("content_type") or "text"),
        content_attributes=dict(content_attributes),
        attachments=[dict(a) for a in attachments if isinstance(a, Mapping)],
        sender=dict(sender) if isinstance(sender, Mapping) else None,
        contact_identifier=_contact_identifier(conversation),
        conversation_status=_optional_str(conversation.get("status")),
        created_at=to_epoch(body.get("created_at")),
    )


def _conversation_event(event: Any, body: Mapping[str, Any]) -> ConversationEvent:
    account_id = _optional_mapping(body.get("account")).get("id", body.get("account_id"))
    status = body.get("status")
    if not isinstance(status, str):
        raise ValueError("conversation event has no status")
    changed = _changed_attributes(body.get("changed_attributes"))
    previous = changed.get("status", {}).get("previous_value")
    uuid = body.get("uuid")
    return ConversationEvent(
        event=event,
        conversation_id=_int(body.get("id"), "id"),
        account_id=_int(account_id, "account.id"),
        inbox_id=_int(body.get("inbox_id"), "inbox_id"),
        status=status,
        previous_status=previous if isinstance(previous, str) else None,
        contact_identifier=_contact_identifier(body),
        last_activity_at=to_epoch(body.get("last_activity_at")),
        updated_at=to_epoch(body.get("updated_at")),
        uuid=uuid if isinstance(uuid, str) else None,
        changed=frozenset(changed),
    )


def _typing_event(event: Any, body: Mapping[str, Any]) -> TypingEvent:
    conversation = _mapping(body.get("conversation"), "conversation")
    user = _optional_mapping(body.get("user"))
    account_id = _optional_mapping(conversation.get("account")).get("id")
    return TypingEvent(
        event=event,
        conversation_id=_int(conversation.get("id"), "conversation.id"),
        account_id=_int(account_id, "conversation.account.id"),
        inbox_id=_int(conversation.get("inbox_id"), "conversation.inbox_id"),
        is_private=bool(body.get("is_private")),
        user=dict(user),
        # A contact's webhook_data has no "type" key (removed in 2.15.0).
        is_contact=user.get("type", "contact") == "contact",
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
    """Unix seconds from an int/float epoch, a numeric string or an ISO-8601 string."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"bad timestamp {value!r}") from None
    return None


def _changed_attributes(raw: Any) -> dict[str, dict[str, Any]]:
    """``[{"status": {"previous_value", "current_value"}}, ...]`` (or one dict) as a dict."""
    items = [raw] if isinstance(raw, Mapping) else raw if isinstance(raw, list) else []
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, Mapping):
            for key, change in item.items():
                out[str(key)] = dict(change) if isinstance(change, Mapping) else {}
    return out


def _contact_identifier(conversation: Mapping[str, Any]) -> str | None:
    sender = _optional_mapping(_optional_mapping(conversation.get("meta")).get("sender"))
    ident = sender.get("identifier")
    return str(ident) if ident not in (None, "") else None


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"webhook body has no {name} object")
    return value


def _optional_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"webhook body has no integer {name}")
    return value


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
