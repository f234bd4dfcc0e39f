"""What changes the fake Chatwoot's records, as Chatwoot does, and the webhooks each change
emits (queued for the sender in :mod:`diswoot.testing.fake_chatwoot.server`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import trio

from diswoot.testing.fake_chatwoot.records import (
    ACTIVITY,
    DELETED_TEXT,
    FILE_TYPES,
    INCOMING,
    MESSAGE_STATUSES,
    MESSAGE_TYPES,
    OUTGOING,
    STATUSES,
    TEMPLATE,
    TRACKED_CONVERSATION_ATTRIBUTES,
    Json,
    QueuedEvent,
    iso,
)
from diswoot.testing.fake_chatwoot.shapes import ChatwootShapes


class ChatwootModel(ChatwootShapes):
    """Creation and state changes of contacts, conversations and messages."""

    # ================================================================== state changes

    def _emit(self, payload: Json) -> None:
        """Queue a webhook (or lose it inside ``deliver=False`` actions)."""
        if not self.echo_incoming and payload.get("message_type") == MESSAGE_TYPES[INCOMING]:
            return
        if not self._deliver:
            self.lost_webhooks.append(payload)
            return
        if self._events_tx is None:
            raise RuntimeError("FakeChatwoot.serve() must run before webhooks can be sent")
        item = QueuedEvent(payload)
        if self._capture is not None:
            self._capture.append(item.done)
        self._pending += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._events_tx.send_nowait(item)

    def _new_contact(self, params: Json) -> Json:
        contact_id = self._next_id("contact", 1)
        email = params.get("email")
        contact: Json = {
            "additional_attributes": dict(params.get("additional_attributes") or {}),
            "availability_status": "offline",
            "email": email.lower() if isinstance(email, str) else None,
            "id": contact_id,
            "name": params.get("name") or "",
            "phone_number": params.get("phone_number"),
            "blocked": bool(params.get("blocked", False)),
            "identifier": params.get("identifier"),
            "thumbnail": "",
            "custom_attributes": dict(params.get("custom_attributes") or {}),
            "created_at": int(self.clock()),
        }
        self.contacts[contact_id] = contact
        return contact

    def _duplicate(self, params: Json, exclude: int | None) -> Json | None:
        """The 422 body for a taken identifier / email / phone number, if any."""
        for contact in self.contacts.values():
            if contact["id"] == exclude:
                continue
            ident = params.get("identifier")
            if ident is not None and ident == contact["identifier"]:
                return {
                    "message": "Identifier has already been taken",
                    "attributes": ["identifier"],
                }
            email = params.get("email")
            if isinstance(email, str) and contact["email"] and email.lower() == contact["email"]:
                return {"message": "Email has already been taken", "attributes": ["email"]}
            phone = params.get("phone_number")
            if phone and phone == contact["phone_number"]:
                return {
                    "message": "Phone number has already been taken",
                    "attributes": ["phone_number"],
                }
        return None

    def _new_contact_inbox(self, contact_id: int, source_id: str | None) -> Json:
        now = iso(self.clock())
        record: Json = {
            "id": self._next_id("contact_inbox", 1),
            "contact_id": contact_id,
            "inbox_id": self.inbox_id,
            "source_id": source_id or str(uuid.uuid4()),
            "hmac_verified": False,
            "pubsub_token": uuid.uuid4().hex[:24],
            "created_at": now,
            "updated_at": now,
        }
        self.contact_inboxes[record["id"]] = record
        return record

    def _contact_inbox_by_source(self, source_id: str) -> Json | None:
        return next(
            (ci for ci in self.contact_inboxes.values() if ci["source_id"] == source_id), None
        )

    def _new_conversation(self, contact_inbox: Json, status: str, extra: Json) -> Json:
        display_id = self._next_id("conversation", 1)
        now = self.clock()
        contact = self.contacts[contact_inbox["contact_id"]]
        conversation: Json = {
            "id": display_id,
            "db_id": 1000 + display_id,
            "uuid": str(uuid.uuid4()),
            "account_id": self.account_id,
            "inbox_id": self.inbox_id,
            "contact_id": contact_inbox["contact_id"],
            "contact_inbox_id": contact_inbox["id"],
            "status": "resolved" if contact["blocked"] else status,
            "priority": None,
            "snoozed_until": None,
            "labels": [],
            "custom_attributes": dict(extra.get("custom_attributes") or {}),
            "additional_attributes": dict(extra.get("additional_attributes") or {}),
            "assignee_id": None,
            "unread_count": 0,
            "agent_last_seen_at": 0,
            "contact_last_seen_at": 0,
            "first_reply_created_at": None,
            "waiting_since": int(now),
            "created_at": int(now),
            "updated_at": now,
            "last_activity_at": int(now),
        }
        self.conversations[display_id] = conversation
        self._emit(self._conversation_webhook(conversation) | {"event": "conversation_created"})
        return conversation

    def _create_message(
        self,
        conversation: Json,
        *,
        message_type: int,
        content: str | None,
        private: bool = False,
        sender: tuple[str, int] | None = None,
        source_id: str | None = None,
        content_type: str = "text",
        content_attributes: Json | None = None,
        attachments: Sequence[tuple[str, str, bytes]] = (),
    ) -> Json:
        """Create a message and run the after-create callbacks (reopen, events, templates)."""
        now = self.clock()
        message_id = self._next_id("message", 1)
        attributes = dict(content_attributes or {})
        self._resolve_reply(conversation, attributes)
        message: Json = {
            "id": message_id,
            "content": content,
            "account_id": self.account_id,
            "inbox_id": self.inbox_id,
            "conversation_id": conversation["id"],
            "message_type": message_type,
            "content_type": content_type,
            "status": "sent",
            "private": private,
            "source_id": source_id,
            "content_attributes": attributes,
            "additional_attributes": {},
            "external_source_ids": {},
            "sentiment": {},
            "sender_type": sender[0] if sender else None,
            "sender_id": sender[1] if sender else None,
            "created_at": now,
            "updated_at": now,
            "attachments": [],
        }
        for filename, mime, data in attachments:
            message["attachments"].append(self._new_attachment(message_id, filename, mime, data))
        self.messages[message_id] = message
        if self._indexed == len(self.messages) - 1:
            self._by_conversation.setdefault(conversation["id"], []).append(message)
            self._indexed += 1
        contact = self.contacts[conversation["contact_id"]]
        if message_type == INCOMING:
            contact["last_activity_at"] = int(now)
            if conversation["status"] in ("resolved", "snoozed") and not contact["blocked"]:
                self._change_conversation(conversation, None, status="open")
        if message_type != ACTIVITY:
            conversation["last_activity_at"] = int(now)
            conversation["updated_at"] = now
        if message_type == INCOMING:
            conversation["unread_count"] += 1
        if message_type in (INCOMING, OUTGOING, TEMPLATE):
            self._emit(self._message_webhook(message, "message_created"))
        if message_type == INCOMING and conversation["waiting_since"] is None:
            self._change_conversation(conversation, None, waiting_since=int(now))
        human_reply = message_type == OUTGOING and not private and message["sender_type"] == "User"
        if human_reply and conversation["first_reply_created_at"] is None:
            self._change_conversation(
                conversation, None, first_reply_created_at=int(now), waiting_since=None
            )
        if message_type == INCOMING:
            self._run_templates(conversation)
        return message

    def _resolve_reply(self, conversation: Json, attributes: Json) -> None:
        """``in_reply_to`` <-> ``in_reply_to_external_id`` (InReplyToMessageBuilder)."""
        messages = self._conversation_messages(conversation)
        if attributes.get("in_reply_to") is not None:
            target = next((m for m in messages if m["id"] == attributes["in_reply_to"]), None)
            if target is not None:
                attributes["in_reply_to_external_id"] = target["source_id"]
        elif attributes.get("in_reply_to_external_id"):
            ext = attributes["in_reply_to_external_id"]
            target = next((m for m in messages if m["source_id"] == ext), None)
            if target is not None:
                attributes["in_reply_to"] = target["id"]

    def _new_attachment(self, message_id: int, filename: str, mime: str, data: bytes) -> Json:
        attachment_id = self._next_id("attachment", 1)
        self.attachment_blobs[attachment_id] = data
        file_type = FILE_TYPES.get(mime, "audio" if mime.startswith("audio/") else "file")
        name = filename.rsplit("/", 1)[-1] or "file"
        url = f"{self.base_url}/rails/active_storage/blobs/redirect/{attachment_id}/{name}"
        return {
            "id": attachment_id,
            "message_id": message_id,
            "account_id": self.account_id,
            "file_type": file_type,
            "extension": name.rsplit(".", 1)[-1].lower() if "." in name else None,
            "content_type": mime,
            "data_url": url,
            "thumb_url": url.replace("/blobs/", "/representations/")
            if file_type == "image"
            else "",
            "file_size": len(data),
            "width": None,
            "height": None,
        }

    def _change_conversation(self, conversation: Json, actor: str | None, **changes: Any) -> None:
        """Apply changes and fire status_changed / updated like ``Conversation`` callbacks."""
        changed = {k: v for k, v in changes.items() if conversation.get(k) != v}
        if "status" in changed and changed["status"] not in STATUSES:
            raise ValueError(f"'{changed['status']}' is not a valid status")
        if (
            changed.get("status")
            and changed["status"] != "snoozed"
            and conversation["snoozed_until"]
        ):
            changed["snoozed_until"] = None
        if not changed:
            return
        previous_updated = conversation["updated_at"]
        previous = {k: conversation.get(k) for k in changed}
        conversation.update(changed)
        conversation["updated_at"] = max(self.clock(), previous_updated + 0.001)
        if "status" in changed:
            self._status_activity(conversation, changed["status"], actor)
            payload = self._conversation_webhook(conversation)
            self._emit(
                payload | {"event": "conversation_status_changed", "changed_attributes": None}
            )
        tracked = [k for k in changed if k in TRACKED_CONVERSATION_ATTRIBUTES]
        if tracked:
            attributes: list[Json] = [
                {k: {"previous_value": previous[k], "current_value": changed[k]}} for k in tracked
            ]
            attributes.append(
                {
                    "updated_at": {
                        "previous_value": iso(previous_updated),
                        "current_value": iso(conversation["updated_at"]),
                    }
                }
            )
            payload = self._conversation_webhook(conversation)
            self._emit(
                payload | {"event": "conversation_updated", "changed_attributes": attributes}
            )
        if changed.get("status") == "resolved":
            self._maybe_csat(conversation)

    def _status_activity(self, conversation: Json, status: str, actor: str | None) -> None:
        """The activity message Chatwoot writes for a status change (never a webhook)."""
        by = f" by {actor}" if actor else ""
        text = {
            "open": f"Conversation was reopened{by}",
            "resolved": f"Conversation was marked resolved{by}",
            "pending": f"Conversation was marked as pending{by}",
            "snoozed": f"Conversation was snoozed{by}",
        }[status]
        self._create_message(conversation, message_type=ACTIVITY, content=text)

    def _maybe_csat(self, conversation: Json) -> None:
        """CsatSurveyService: one input_csat template per conversation, ever."""
        if not self.inbox.get("csat_survey_enabled") or self._csat_message(conversation):
            return
        config = self.inbox.get("csat_config") or {}
        url = f"{self.base_url}/survey/responses/{conversation['uuid']}"
        custom = config.get("message")
        self._create_message(
            conversation,
            message_type=TEMPLATE,
            content=f"{custom} {url}" if custom else f"Please rate this conversation, {url}",
            content_type="input_csat",
            content_attributes={"display_type": config.get("display_type") or "emoji"},
        )

    def _run_templates(self, conversation: Json) -> None:
        """MessageTemplates::HookExecutionService: out-of-office first, then greeting."""
        now = self.clock()
        messages = self._conversation_messages(conversation)
        today = datetime.fromtimestamp(now, UTC).date()
        recent_outgoing = any(
            m["message_type"] == OUTGOING and now - m["created_at"] <= 300 for m in messages
        )
        template_today = any(
            m["message_type"] == TEMPLATE
            and datetime.fromtimestamp(m["created_at"], UTC).date() == today
            for m in messages
        )
        if (
            self.inbox.get("working_hours_enabled")
            and self.inbox.get("out_of_office_message")
            and not self.inbox_open(now)
            and not template_today
            and not recent_outgoing
        ):
            self._create_message(
                conversation, message_type=TEMPLATE, content=self.inbox["out_of_office_message"]
            )
        messages = self._conversation_messages(conversation)
        first_contact_message = not any(m["message_type"] in (OUTGOING, TEMPLATE) for m in messages)
        if (
            self.inbox.get("greeting_enabled")
            and self.inbox.get("greeting_message")
            and first_contact_message
        ):
            self._create_message(
                conversation, message_type=TEMPLATE, content=self.inbox["greeting_message"]
            )

    def inbox_open(self, now: float) -> bool:
        """``WorkingHour#open_at?`` in the inbox timezone (inclusive bounds)."""
        local = datetime.fromtimestamp(now, ZoneInfo(self.inbox.get("timezone") or "UTC"))
        wday = (local.weekday() + 1) % 7
        day = next((h for h in self.inbox["working_hours"] if h["day_of_week"] == wday), None)
        if day is None or day.get("closed_all_day"):
            return False
        if day.get("open_all_day"):
            return True
        minute = local.hour * 60 + local.minute
        opens = day["open_hour"] * 60 + day["open_minutes"]
        closes = day["close_hour"] * 60 + day["close_minutes"]
        return bool(opens <= minute <= closes)

    def _set_message_status(
        self, message: Json, status: str, external_error: str | None, *, echo: bool = True
    ) -> None:
        """Messages::StatusUpdateService; a real change fires message_updated (unless not
        ``echo``)."""
        if status not in MESSAGE_STATUSES or (
            message["status"] == "read" and status == "delivered"
        ):
            return
        attributes = dict(message["content_attributes"])
        attributes.pop("external_error", None)
        if status == "failed" and external_error is not None:
            attributes["external_error"] = external_error
        if message["status"] == status and attributes == message["content_attributes"]:
            return
        message["status"] = status
        message["content_attributes"] = attributes
        message["updated_at"] = self.clock()
        if echo and message["message_type"] != ACTIVITY:
            self._emit(self._message_webhook(message, "message_updated"))

    def _soft_delete(self, message: Json) -> None:
        for attachment in message["attachments"]:
            self.attachment_blobs.pop(attachment["id"], None)
        message.update(
            content=DELETED_TEXT,
            content_type="text",
            content_attributes={"deleted": True},
            attachments=[],
            updated_at=self.clock(),
        )
        if message["message_type"] != ACTIVITY:
            self._emit(self._message_webhook(message, "message_updated"))

    def _typing(self, conversation: Json, user: Json, on: bool, private: bool) -> None:
        event = "conversation_typing_on" if on else "conversation_typing_off"
        self._emit(
            {
                "event": event,
                "user": user,
                "conversation": self._conversation_webhook(conversation),
                "is_private": private,
            }
        )
