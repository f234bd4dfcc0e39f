"""How the fake Chatwoot presents its records: REST answers, webhook and push payloads."""

from __future__ import annotations

from diswoot.testing.fake_chatwoot.records import (
    ACTIVITY,
    MESSAGE_TYPES,
    Json,
    iso,
)
from diswoot.testing.fake_chatwoot.state import ChatwootState


class ChatwootShapes(ChatwootState):
    """The payload shapes of ``chatwoot-api.md`` for contacts, conversations, messages."""

    # ================================================================== presenters

    def _inbox_brief(self) -> Json:
        keys = ("id", "avatar_url", "channel_id", "name", "channel_type", "provider")
        return {k: self.inbox.get(k) for k in keys}

    def _contact_rest(self, contact: Json, *, with_inboxes: bool = True) -> Json:
        data = dict(contact)
        if with_inboxes:
            data["contact_inboxes"] = [
                {"source_id": ci["source_id"], "inbox": self._inbox_brief()}
                for ci in self.contact_inboxes.values()
                if ci["contact_id"] == contact["id"]
            ]
        return data

    def _contact_push(self, contact: Json) -> Json:
        keys = ("additional_attributes", "custom_attributes", "email", "id", "identifier", "name")
        data = {k: contact[k] for k in keys}
        data |= {
            "phone_number": contact["phone_number"],
            "thumbnail": contact["thumbnail"],
            "blocked": contact["blocked"],
            "type": "contact",
        }
        return data

    def _contact_webhook(self, contact: Json) -> Json:
        return {
            "account": dict(self.account),
            "additional_attributes": contact["additional_attributes"],
            "avatar": contact["thumbnail"],
            "custom_attributes": contact["custom_attributes"],
            "email": contact["email"],
            "id": contact["id"],
            "identifier": contact["identifier"],
            "name": contact["name"],
            "phone_number": contact["phone_number"],
            "thumbnail": contact["thumbnail"],
            "blocked": contact["blocked"],
        }

    def _user_push(self, user: Json) -> Json:
        return {
            "id": user["id"],
            "name": user["name"],
            "available_name": user["name"],
            "avatar_url": "",
            "type": "user",
            "availability_status": "online",
            "thumbnail": "",
        }

    def _user_webhook(self, user: Json) -> Json:
        return {"id": user["id"], "name": user["name"], "email": user["email"], "type": "user"}

    def _user(self, user_id: int) -> Json:
        return self.agent if user_id == self.agent["id"] else self.user

    def _sender(self, message: Json, *, webhook: bool) -> Json | None:
        kind, sender_id = message["sender_type"], message["sender_id"]
        if kind == "Contact":
            contact = self.contacts[sender_id]
            return self._contact_webhook(contact) if webhook else self._contact_push(contact)
        if kind == "User":
            user = self._user(sender_id)
            return self._user_webhook(user) if webhook else self._user_push(user)
        return None

    def _message_push(self, message: Json) -> Json:
        """``Message#push_event_data`` (messages[0] of conversation payloads, §2.3)."""
        conversation = self.conversations[message["conversation_id"]]
        data = {k: v for k, v in message.items() if k != "attachments"}
        data["created_at"] = int(message["created_at"])
        data["updated_at"] = iso(message["updated_at"])
        data["processed_message_content"] = message["content"]
        data["conversation"] = {
            "assignee_id": conversation["assignee_id"],
            "unread_count": conversation["unread_count"],
            "last_activity_at": conversation["last_activity_at"],
            "contact_inbox": {"source_id": self._contact_inbox_of(conversation)["source_id"]},
        }
        sender = self._sender(message, webhook=False)
        if sender is not None:
            data["sender"] = sender
        if message["attachments"]:
            data["attachments"] = [dict(a) for a in message["attachments"]]
        return data

    def _message_rest(self, message: Json, echo_id: str | None = None) -> Json:
        """``_message.json.jbuilder``: integer message_type, epoch created_at."""
        data: Json = {
            "id": message["id"],
            "content": message["content"],
            "inbox_id": message["inbox_id"],
            "conversation_id": message["conversation_id"],
            "message_type": message["message_type"],
            "content_type": message["content_type"],
            "status": message["status"],
            "content_attributes": dict(message["content_attributes"]),
            "created_at": int(message["created_at"]),
            "private": message["private"],
            "source_id": message["source_id"],
            "sender": self._sender(message, webhook=False),
        }
        if echo_id is not None:
            data["echo_id"] = echo_id
        if message["attachments"]:
            data["attachments"] = [dict(a) for a in message["attachments"]]
        return data

    def _message_webhook(self, message: Json, event: str) -> Json:
        """``Message#webhook_data`` (§2.4): string message_type, ISO created_at."""
        conversation = self.conversations[message["conversation_id"]]
        data: Json = {
            "event": event,
            "id": message["id"],
            "content": message["content"],
            "content_type": message["content_type"],
            "content_attributes": dict(message["content_attributes"]),
            "additional_attributes": dict(message["additional_attributes"]),
            "message_type": MESSAGE_TYPES[message["message_type"]],
            "private": message["private"],
            "source_id": message["source_id"],
            "created_at": iso(message["created_at"]),
            "sender": self._sender(message, webhook=True),
            "account": dict(self.account),
            "inbox": {"id": self.inbox_id, "name": self.inbox["name"]},
            "conversation": self._conversation_webhook(conversation),
        }
        if message["attachments"]:
            data["attachments"] = [dict(a) for a in message["attachments"]]
        return data

    def _last_chat_message(self, conversation: Json) -> Json | None:
        return next(
            (
                m
                for m in reversed(self._messages_of(conversation["id"]))
                if not m["private"] and m["message_type"] != ACTIVITY
            ),
            None,
        )

    def _conversation_webhook(self, conversation: Json) -> Json:
        """``Conversation#webhook_data`` (§2.2): no uuid, no inbox object."""
        contact = self.contacts[conversation["contact_id"]]
        contact_inbox = self._contact_inbox_of(conversation)
        last = self._last_chat_message(conversation)
        return {
            "id": conversation["id"],
            "inbox_id": conversation["inbox_id"],
            "account": dict(self.account),
            "channel": "Channel::Api",
            "status": conversation["status"],
            "can_reply": True,
            "additional_attributes": dict(conversation["additional_attributes"]),
            "custom_attributes": dict(conversation["custom_attributes"]),
            "labels": list(conversation["labels"]),
            "priority": conversation["priority"],
            "snoozed_until": conversation["snoozed_until"],
            "first_reply_created_at": conversation["first_reply_created_at"],
            "unread_count": conversation["unread_count"],
            "waiting_since": conversation["waiting_since"],
            "agent_last_seen_at": conversation["agent_last_seen_at"],
            "contact_last_seen_at": conversation["contact_last_seen_at"],
            "last_activity_at": conversation["last_activity_at"],
            "timestamp": conversation["last_activity_at"],
            "created_at": conversation["created_at"],
            "updated_at": conversation["updated_at"],
            "contact_inbox": dict(contact_inbox),
            "meta": {
                "sender": self._contact_push(contact),
                "assignee": None,
                "assignee_type": None,
                "team": None,
                "hmac_verified": False,
            },
            "messages": [self._message_push(last)] if last else [],
        }

    def _conversation_rest(self, conversation: Json) -> Json:
        """``_conversation.json.jbuilder``: has uuid, no contact_inbox."""
        contact = self.contacts[conversation["contact_id"]]
        last = self._last_chat_message(conversation)
        pushed = self._message_push(last) if last else None
        return {
            "meta": {
                "sender": self._contact_push(contact),
                "channel": "Channel::Api",
                "hmac_verified": False,
            },
            "id": conversation["id"],
            "messages": [pushed] if pushed else [],
            "account_id": self.account_id,
            "uuid": conversation["uuid"],
            "additional_attributes": dict(conversation["additional_attributes"]),
            "agent_last_seen_at": conversation["agent_last_seen_at"],
            "assignee_last_seen_at": 0,
            "can_reply": True,
            "contact_last_seen_at": conversation["contact_last_seen_at"],
            "custom_attributes": dict(conversation["custom_attributes"]),
            "inbox_id": conversation["inbox_id"],
            "labels": list(conversation["labels"]),
            "muted": contact["blocked"],
            "snoozed_until": conversation["snoozed_until"],
            "status": conversation["status"],
            "created_at": conversation["created_at"],
            "updated_at": conversation["updated_at"],
            "timestamp": conversation["last_activity_at"],
            "first_reply_created_at": conversation["first_reply_created_at"],
            "unread_count": conversation["unread_count"],
            "last_activity_at": conversation["last_activity_at"],
            "priority": conversation["priority"],
            "waiting_since": conversation["waiting_since"],
            "sla_policy_id": None,
            "last_non_activity_message": pushed,
        }
