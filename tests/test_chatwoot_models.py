"""Parsing of Chatwoot webhook bodies and inbox JSON, with payloads shaped like chatwoot-api.md."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diswoot.chatwoot.models import (
    ConversationEvent,
    InboxConfig,
    MessageEvent,
    TypingEvent,
    message_type_name,
    parse_webhook,
    to_epoch,
)

ACCOUNT = {"id": 1, "name": "Acme"}
CONTACT_META: dict[str, Any] = {
    "additional_attributes": {},
    "custom_attributes": {},
    "email": None,
    "id": 55,
    "identifier": "123456789",
    "name": "alice",
    "phone_number": None,
    "thumbnail": "",
    "blocked": False,
    "type": "contact",
}
CONVERSATION: dict[str, Any] = {
    "id": 42,
    "inbox_id": 7,
    "account": ACCOUNT,
    "channel": "Channel::Api",
    "status": "open",
    "can_reply": True,
    "additional_attributes": {},
    "custom_attributes": {},
    "labels": [],
    "priority": None,
    "snoozed_until": None,
    "first_reply_created_at": None,
    "unread_count": 1,
    "waiting_since": 1781690400,
    "agent_last_seen_at": 0,
    "contact_last_seen_at": 0,
    "last_activity_at": 1781690400,
    "timestamp": 1781690400,
    "created_at": 1781690400,
    "updated_at": 1781690400.123,
    "contact_inbox": {"id": 60, "contact_id": 55, "inbox_id": 7, "source_id": "3f0c-uuid"},
    "meta": {"sender": CONTACT_META, "assignee": None, "assignee_type": None, "team": None},
    "messages": [],
}
INCOMING: dict[str, Any] = {
    "event": "message_created",
    "id": 9001,
    "message_type": "incoming",
    "private": False,
    "content": "hello",
    "content_type": "text",
    "content_attributes": {},
    "additional_attributes": {},
    "source_id": "1250000000000000001",
    "created_at": "2026-06-17T10:00:00.123Z",
    "sender": {"id": 55, "name": "alice", "identifier": "123456789", "account": ACCOUNT},
    "account": ACCOUNT,
    "inbox": {"id": 7, "name": "Discord"},
    "conversation": CONVERSATION,
}
OUTGOING: dict[str, Any] = {
    **INCOMING,
    "id": 9002,
    "message_type": "outgoing",
    "content": "How can I help?",
    "content_attributes": {"in_reply_to": 9001, "in_reply_to_external_id": "1250000000000000001"},
    "source_id": None,
    "sender": {"id": 3, "name": "Bob", "email": "bob@acme.test", "type": "user"},
    "attachments": [
        {
            "id": 77,
            "message_id": 9002,
            "file_type": "image",
            "data_url": "https://chat.example.com/rails/active_storage/blobs/redirect/x/cat.png",
        }
    ],
}


def test_incoming_message_created() -> None:
    event = parse_webhook(INCOMING)
    assert event == MessageEvent(
        event="message_created",
        message_id=9001,
        conversation_id=42,
        account_id=1,
        inbox_id=7,
        message_type="incoming",
        private=False,
        content="hello",
        content_type="text",
        content_attributes={},
        attachments=[],
        sender=INCOMING["sender"],
        contact_identifier="123456789",
        conversation_status="open",
        created_at=datetime(2026, 6, 17, 10, 0, 0, 123000, tzinfo=UTC).timestamp(),
    )


def test_outgoing_reply_with_attachment_and_reply_target() -> None:
    event = parse_webhook(OUTGOING)
    assert isinstance(event, MessageEvent)
    assert event.message_type == "outgoing" and not event.private
    assert event.content_attributes["in_reply_to_external_id"] == "1250000000000000001"
    assert event.attachments[0]["file_type"] == "image"
    assert event.sender is not None and event.sender["type"] == "user"
    assert not event.deleted and event.external_error is None


def test_integer_message_type_and_ids_from_the_conversation() -> None:
    body = copy.deepcopy(OUTGOING)
    body["message_type"] = 3
    body["created_at"] = 1781690400
    del body["account"], body["inbox"]
    event = parse_webhook(body)
    assert isinstance(event, MessageEvent)
    assert (event.message_type, event.account_id, event.inbox_id) == ("template", 1, 7)
    assert event.created_at == 1781690400.0


def test_deleted_and_failed_message_updates() -> None:
    deleted = {
        **OUTGOING,
        "event": "message_updated",
        "content": "This message was deleted",
        "content_attributes": {"deleted": True},
    }
    failed = {
        **OUTGOING,
        "event": "message_updated",
        "content_attributes": {"external_error": "500 Internal Server Error"},
    }
    deleted_event = parse_webhook(deleted)
    failed_event = parse_webhook(failed)
    assert isinstance(deleted_event, MessageEvent) and deleted_event.deleted
    assert isinstance(failed_event, MessageEvent)
    assert failed_event.external_error == "500 Internal Server Error"
    assert failed_event.event == "message_updated"


def test_status_changed_has_no_previous_status() -> None:
    body = {
        **CONVERSATION,
        "status": "resolved",
        "event": "conversation_status_changed",
        "changed_attributes": None,
    }
    event = parse_webhook(body)
    assert event == ConversationEvent(
        event="conversation_status_changed",
        conversation_id=42,
        account_id=1,
        inbox_id=7,
        status="resolved",
        previous_status=None,
        contact_identifier="123456789",
        last_activity_at=1781690400.0,
        updated_at=1781690400.123,
        uuid=None,
    )


def test_conversation_updated_reads_previous_status() -> None:
    body = {
        **CONVERSATION,
        "status": "resolved",
        "event": "conversation_updated",
        "changed_attributes": [
            {"status": {"previous_value": "open", "current_value": "resolved"}},
            {"updated_at": {"previous_value": "2026-06-17T10:00:00.000Z", "current_value": "x"}},
        ],
    }
    event = parse_webhook(body)
    assert isinstance(event, ConversationEvent)
    assert event.previous_status == "open" and event.status == "resolved"
    assert event.changed == {"status", "updated_at"}


def test_conversation_updated_without_status_change() -> None:
    body = {
        **CONVERSATION,
        "event": "conversation_updated",
        "changed_attributes": [{"waiting_since": {"previous_value": None, "current_value": 1}}],
    }
    event = parse_webhook(body)
    assert isinstance(event, ConversationEvent)
    assert event.previous_status is None and event.changed == {"waiting_since"}


def test_conversation_created() -> None:
    event = parse_webhook({**CONVERSATION, "event": "conversation_created"})
    assert isinstance(event, ConversationEvent)
    assert event.event == "conversation_created" and event.status == "open"


@pytest.mark.parametrize(
    ("user", "is_contact"),
    [
        ({"id": 3, "name": "Bob", "email": "bob@acme.test", "type": "user"}, False),
        ({"id": 9, "name": "Bot", "type": "agent_bot"}, False),
        ({"id": 55, "name": "alice", "identifier": "123456789", "account": ACCOUNT}, True),
    ],
)
def test_typing_events(user: dict[str, Any], is_contact: bool) -> None:
    body = {
        "event": "conversation_typing_on",
        "is_private": False,
        "user": user,
        "conversation": CONVERSATION,
    }
    event = parse_webhook(body)
    assert event == TypingEvent(
        event="conversation_typing_on",
        conversation_id=42,
        account_id=1,
        inbox_id=7,
        is_private=False,
        user=user,
        is_contact=is_contact,
    )
    assert event.on


def test_private_typing_off() -> None:
    body = {
        "event": "conversation_typing_off",
        "is_private": True,
        "user": {"id": 3, "name": "Bob", "type": "user"},
        "conversation": CONVERSATION,
    }
    event = parse_webhook(body)
    assert isinstance(event, TypingEvent) and event.is_private and not event.on


@pytest.mark.parametrize("name", ["contact_created", "inbox_updated", "webwidget_triggered"])
def test_unknown_events_are_ignored(name: str) -> None:
    assert parse_webhook({"event": name, "id": 1}) is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        "message_created",
        {},
        {"event": 5},
        {"event": "message_created", "id": 1},
        {**INCOMING, "id": "9001"},
        {**INCOMING, "conversation": {"status": "open"}},
        {**INCOMING, "message_type": "sideways"},
        {**INCOMING, "created_at": "yesterday"},
        {**CONVERSATION, "event": "conversation_updated", "status": None},
        {"event": "conversation_typing_on", "user": {}, "conversation": {"id": 42}},
    ],
)
def test_broken_bodies_raise_value_error(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_webhook(body)


def test_inbox_config_from_api() -> None:
    hours = [
        {
            "day_of_week": d,
            "closed_all_day": d in (0, 6),
            "open_hour": 9,
            "open_minutes": 0,
            "close_hour": 17,
            "close_minutes": 0,
            "open_all_day": False,
        }
        for d in range(7)
    ]
    raw = {
        "id": 7,
        "name": "Discord",
        "channel_type": "Channel::Api",
        "greeting_enabled": True,
        "greeting_message": "Hello!",
        "working_hours_enabled": True,
        "csat_survey_enabled": True,
        "out_of_office_message": "",
        "working_hours": hours,
        "timezone": "America/New_York",
        "lock_to_single_conversation": True,
        "inbox_identifier": "abc123",
        "secret": None,
    }
    inbox = InboxConfig.from_api(raw)
    assert inbox.working_hours == hours and inbox.timezone == "America/New_York"
    assert inbox.greeting_enabled and inbox.greeting_message == "Hello!"
    assert inbox.out_of_office_message is None  # blank means "not configured"
    assert inbox.lock_to_single_conversation and inbox.csat_survey_enabled
    assert inbox.inbox_identifier == "abc123" and inbox.raw == raw


def test_inbox_config_defaults_and_errors() -> None:
    inbox = InboxConfig.from_api({"id": 7})
    assert inbox.timezone == "UTC" and inbox.working_hours == []
    assert not inbox.working_hours_enabled and not inbox.csat_survey_enabled
    with pytest.raises(ValueError):
        InboxConfig.from_api({"name": "no id"})


@given(st.integers(min_value=0, max_value=4_102_444_800), st.integers(0, 999))
def test_iso_and_epoch_timestamps_agree(seconds: int, millis: int) -> None:
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    parsed = to_epoch(f"{stamp}.{millis:03d}Z")
    assert parsed is not None and abs(parsed - (seconds + millis / 1000)) < 1e-6
    assert to_epoch(seconds) == float(seconds)


@pytest.mark.parametrize(
    ("raw", "name"), [(0, "incoming"), (1, "outgoing"), (2, "activity"), ("template", "template")]
)
def test_message_type_names(raw: Any, name: str) -> None:
    assert message_type_name(raw) == name
