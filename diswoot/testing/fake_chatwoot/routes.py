"""The fake Chatwoot's REST and public endpoints (Quart view functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import Response, g

from diswoot.testing.fake_chatwoot.model import ChatwootModel
from diswoot.testing.fake_chatwoot.records import (
    ACTIVITY,
    CONVERSATIONS_PER_PAGE,
    CSAT_WINDOW_DAYS,
    INCOMING,
    MAX_ATTACHMENTS,
    MAX_CONTENT,
    MESSAGES_PER_MINUTE,
    NOT_FOUND,
    OUTGOING,
    SEARCH_PAGE_SIZE,
    STATUSES,
    Json,
    RecordedRequest,
    iso,
    rails_form,
    truthy,
)


class ChatwootRoutes(ChatwootModel):
    """One view per endpoint Diswoot uses, answering with Chatwoot's shapes and errors."""

    def _params(self) -> Json:
        """Rails-style params: JSON body or decoded multipart fields, over the query string."""
        recorded: RecordedRequest = g.recorded
        params: Json = dict(recorded.query)
        if isinstance(recorded.json, dict):
            params.update(recorded.json)
        params.update(rails_form(recorded.form))
        return params

    # ================================================================== handlers: misc

    async def _health(self) -> Any:
        return {"status": "woot"}

    async def _api_version(self) -> Any:
        stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "version": self.version,
            "timestamp": stamp,
            "queue_services": "ok",
            "data_services": "ok",
        }

    async def _profile(self) -> Any:
        return {
            "id": self.user["id"],
            "name": self.user["name"],
            "display_name": self.user["name"],
            "email": self.user["email"],
            "account_id": self.account_id,
            "role": self.user["role"],
            "type": "user",
            "accounts": [
                {"id": self.account_id, "name": self.account["name"], "role": self.user["role"]}
            ],
        }

    async def _show_inbox(self, account_id: int, iid: int) -> Any:
        if iid != self.inbox_id:
            return NOT_FOUND, 404
        return dict(self.inbox)

    # ================================================================== handlers: contacts

    async def _create_contact(self, account_id: int) -> Any:
        params = self._params()
        inbox_id = params.get("inbox_id")
        if inbox_id is not None and int(inbox_id) != self.inbox_id:
            return NOT_FOUND, 404
        duplicate = self._duplicate(params, None)
        if duplicate:
            return duplicate, 422
        contact = self._new_contact(params)
        contact_inbox: Json = {"inbox": None, "source_id": None}
        if inbox_id is not None:
            record = self._new_contact_inbox(contact["id"], params.get("source_id"))
            contact_inbox = {"inbox": dict(self.inbox), "source_id": record["source_id"]}
        return {"payload": {"contact": self._contact_rest(contact), "contact_inbox": contact_inbox}}

    async def _search_contacts(self, account_id: int) -> Any:
        params = self._params()
        q = params.get("q")
        if not q:
            return {"error": "Specify search string with parameter q"}, 422
        low = q.lower()
        hits = [
            c
            for c in self.contacts.values()
            if low in (c["name"] or "").lower()
            or low in (c["email"] or "").lower()
            or low in (c["phone_number"] or "").lower()
            or q in (c["identifier"] or "")
        ]
        page = max(int(params.get("page") or 1), 1)
        chunk = hits[(page - 1) * SEARCH_PAGE_SIZE : page * SEARCH_PAGE_SIZE]
        return {
            "meta": {
                "count": len(hits),
                "current_page": str(page),
                "has_more": page * SEARCH_PAGE_SIZE < len(hits),
            },
            "payload": [self._contact_rest(c) for c in chunk],
        }

    async def _show_contact(self, account_id: int, contact_id: int) -> Any:
        contact = self.contacts.get(contact_id)
        if contact is None:
            return NOT_FOUND, 404
        return {"payload": self._contact_rest(contact)}

    async def _update_contact(self, account_id: int, contact_id: int) -> Any:
        contact = self.contacts.get(contact_id)
        if contact is None:
            return NOT_FOUND, 404
        params = self._params()
        duplicate = self._duplicate(params, contact_id)
        if duplicate:
            return duplicate, 422
        for key in ("name", "identifier", "phone_number", "blocked"):
            if key in params:
                contact[key] = params[key]
        if "email" in params:
            contact["email"] = params["email"].lower() if params["email"] else None
        for key in ("custom_attributes", "additional_attributes"):
            if isinstance(params.get(key), dict):
                contact[key] = contact[key] | params[key]
        return {"payload": self._contact_rest(contact)}

    async def _create_contact_inbox(self, account_id: int, contact_id: int) -> Any:
        params = self._params()
        if contact_id not in self.contacts or int(params.get("inbox_id") or 0) != self.inbox_id:
            return NOT_FOUND, 404
        source_id = params.get("source_id")
        existing = self._contact_inbox_by_source(source_id) if source_id else None
        if existing is not None and existing["contact_id"] != contact_id:
            return {"status": 500, "error": "Internal Server Error"}, 500
        record = existing or self._new_contact_inbox(contact_id, source_id)
        return {"source_id": record["source_id"], "inbox": self._inbox_brief()}

    async def _contact_conversations(self, account_id: int, contact_id: int) -> Any:
        if contact_id not in self.contacts:
            return NOT_FOUND, 404
        mine = [c for c in self.conversations.values() if c["contact_id"] == contact_id]
        mine.sort(key=lambda c: (c["last_activity_at"], c["id"]), reverse=True)
        return {"payload": [self._conversation_rest(c) for c in mine[:20]]}

    # ================================================================== handlers: conversations

    async def _list_conversations(self, account_id: int) -> Any:
        params = self._params()
        found = list(self.conversations.values())
        if params.get("inbox_id"):
            found = [c for c in found if c["inbox_id"] == int(params["inbox_id"])]
        if params.get("source_id"):
            found = [
                c for c in found if self._contact_inbox_of(c)["source_id"] == params["source_id"]
            ]
        status = params.get("status") or "open"
        if status != "all":
            found = [c for c in found if c["status"] == status]
        found.sort(key=lambda c: (c["last_activity_at"], c["id"]), reverse=True)
        total = len(found)
        if params.get("updated_within"):
            since = self.clock() - int(params["updated_within"])
            found = [c for c in found if c["updated_at"] >= since]
        else:
            page = max(int(params.get("page") or 1), 1)
            found = found[(page - 1) * CONVERSATIONS_PER_PAGE : page * CONVERSATIONS_PER_PAGE]
        meta = {"mine_count": 0, "assigned_count": 0, "unassigned_count": total, "all_count": total}
        return {"data": {"meta": meta, "payload": [self._conversation_rest(c) for c in found]}}

    async def _create_conversation(self, account_id: int) -> Any:
        params = self._params()
        if int(params.get("inbox_id") or 0) != self.inbox_id:
            return NOT_FOUND, 404
        contact_id = params.get("contact_id")
        if not isinstance(contact_id, int) or contact_id not in self.contacts:
            return NOT_FOUND, 404
        source_id = params.get("source_id")
        contact_inbox = self._contact_inbox_by_source(source_id) if source_id else None
        if contact_inbox is not None and contact_inbox["contact_id"] != contact_id:
            return {"error": "source_id should be unique"}, 422
        if contact_inbox is None:
            contact_inbox = self._new_contact_inbox(contact_id, source_id)
        if self.inbox.get("lock_to_single_conversation"):
            existing = [
                c
                for c in self.conversations.values()
                if c["contact_inbox_id"] == contact_inbox["id"]
            ]
            if existing:
                return self._conversation_rest(existing[-1])
        status = params.get("status") or "open"
        if status not in STATUSES:
            return {"error": f"'{status}' is not a valid status"}, 422
        conversation = self._new_conversation(contact_inbox, status, params)
        initial = params.get("message")
        if isinstance(initial, dict) and initial.get("content"):
            kind = INCOMING if initial.get("message_type") == "incoming" else OUTGOING
            sender = ("Contact", contact_id) if kind == INCOMING else ("User", self.user["id"])
            self._create_message(
                conversation, message_type=kind, content=initial["content"], sender=sender
            )
        return self._conversation_rest(conversation)

    async def _show_conversation(self, account_id: int, cid: int) -> Any:
        conversation = self.conversations.get(cid)
        if conversation is None:
            return NOT_FOUND, 404
        return self._conversation_rest(conversation)

    async def _toggle_status(self, account_id: int, cid: int) -> Any:
        conversation = self.conversations.get(cid)
        if conversation is None:
            return NOT_FOUND, 404
        params = self._params()
        status = params.get("status")
        if status is None:
            status = "resolved" if conversation["status"] == "open" else "open"
        if status not in STATUSES:
            return {"error": f"'{status}' is not a valid status"}, 422
        changes: Json = {"status": status}
        if status == "snoozed" and params.get("snoozed_until") is not None:
            try:
                changes["snoozed_until"] = int(params["snoozed_until"])
            except (TypeError, ValueError):
                return {"error": "invalid date"}, 422
        self._change_conversation(conversation, self.user["name"], **changes)
        return {
            "meta": {},
            "payload": {
                "success": True,
                "conversation_id": cid,
                "current_status": conversation["status"],
                "snoozed_until": conversation["snoozed_until"],
            },
        }

    async def _agent_typing_api(self, account_id: int, cid: int) -> Any:
        conversation = self.conversations.get(cid)
        if conversation is None:
            return NOT_FOUND, 404
        params = self._params()
        on = params.get("typing_status") == "on"
        self._typing(
            conversation, self._user_webhook(self.user), on, bool(params.get("is_private"))
        )
        return Response("", 200)

    async def _contact_typing(self, ident: str, source_id: str, cid: int) -> Any:
        contact_inbox = self._contact_inbox_by_source(source_id)
        conversation = self.conversations.get(cid)
        if (
            ident != self.inbox["inbox_identifier"]
            or contact_inbox is None
            or conversation is None
            or conversation["contact_inbox_id"] != contact_inbox["id"]
        ):
            return NOT_FOUND, 404
        params = self._params()
        contact = self._contact_webhook(self.contacts[contact_inbox["contact_id"]])
        self._typing(conversation, contact, params.get("typing_status") == "on", False)
        return Response("", 200)

    # ================================================================== handlers: messages

    async def _list_messages(self, account_id: int, cid: int) -> Any:
        conversation = self.conversations.get(cid)
        if conversation is None:
            return NOT_FOUND, 404
        params = self._params()
        messages = self._conversation_messages(conversation)
        if str(params.get("filter_internal_messages")).lower() == "true":
            messages = [m for m in messages if not m["private"] and m["message_type"] != ACTIVITY]
        after = int(params["after"]) if params.get("after") else None
        before = int(params["before"]) if params.get("before") else None
        if after is not None and before is not None:
            picked = [m for m in messages if after <= m["id"] < before][:1000]
        elif after is not None:
            later = sorted((m for m in messages if m["id"] > after), key=lambda m: m["created_at"])
            picked = later[:100]
        elif before is not None:
            picked = [m for m in messages if m["id"] < before][-20:]
        else:
            picked = messages[-20:]
        contact = self.contacts[conversation["contact_id"]]
        meta = {
            "labels": list(conversation["labels"]),
            "additional_attributes": dict(conversation["additional_attributes"]),
            "contact": self._contact_rest(contact, with_inboxes=False),
            "agent_last_seen_at": conversation["agent_last_seen_at"],
            "assignee_last_seen_at": 0,
        }
        return {"meta": meta, "payload": [self._message_rest(m) for m in picked]}

    async def _post_message(self, account_id: int, cid: int) -> Any:
        conversation = self.conversations.get(cid)
        if conversation is None:
            return NOT_FOUND, 404
        params = self._params()
        kind_name = params.get("message_type") or "outgoing"
        if kind_name not in ("incoming", "outgoing"):
            return {"error": f"'{kind_name}' is not a valid message_type"}, 422
        content = params.get("content")
        files = [f for f in g.recorded.files if f.field == "attachments[]"]
        if isinstance(content, str) and len(content) > MAX_CONTENT:
            return {
                "error": "Validation failed: Content is too long (maximum is 150000 characters)"
            }, 422
        if len(files) > MAX_ATTACHMENTS:
            return {"error": "Validation failed: Too many attachments"}, 422
        window = self.clock() - 60
        recent = [m for m in self._conversation_messages(conversation) if m["created_at"] > window]
        if len(recent) >= MESSAGES_PER_MINUTE:
            return {"error": "Validation failed: Too many messages"}, 422
        attributes = params.get("content_attributes")
        kind = INCOMING if kind_name == "incoming" else OUTGOING
        sender = (
            ("Contact", conversation["contact_id"])
            if kind == INCOMING
            else ("User", self.user["id"])
        )
        message = self._create_message(
            conversation,
            message_type=kind,
            content=content if isinstance(content, str) else None,
            private=truthy(params.get("private")),
            sender=sender,
            source_id=params.get("source_id"),
            content_type=params.get("content_type") or "text",
            content_attributes=attributes if isinstance(attributes, dict) else None,
            attachments=[(f.filename, f.content_type, f.data) for f in files],
        )
        return self._message_rest(message, echo_id=params.get("echo_id"))

    async def _message_status(self, account_id: int, cid: int, mid: int) -> Any:
        message = self.messages.get(mid)
        if cid not in self.conversations or message is None or message["conversation_id"] != cid:
            return NOT_FOUND, 404
        if self.inbox.get("channel_type") != "Channel::Api":
            return {"error": "Message status update is only allowed for API inboxes"}, 403
        params = self._params()
        self._set_message_status(
            message,
            str(params.get("status")),
            params.get("external_error"),
            echo=self.echo_receipts,
        )
        return self._message_rest(message)

    async def _destroy_message(self, account_id: int, cid: int, mid: int) -> Any:
        message = self.messages.get(mid)
        if cid not in self.conversations or message is None or message["conversation_id"] != cid:
            return NOT_FOUND, 404
        self._soft_delete(message)
        return self._message_rest(message)

    async def _blob_redirect(self, aid: int, name: str) -> Any:
        if aid not in self.attachment_blobs:
            return NOT_FOUND, 404
        return Response("", 302, headers={"Location": f"/rails/active_storage/disk/{aid}/{name}"})

    async def _blob(self, aid: int, name: str) -> Any:
        data = self.attachment_blobs.get(aid)
        if data is None:
            return NOT_FOUND, 404
        mime = next(
            (
                a["content_type"]
                for m in self.messages.values()
                for a in m["attachments"]
                if a["id"] == aid
            ),
            "application/octet-stream",
        )
        return Response(data, 200, mimetype=mime)

    # ================================================================== handlers: public CSAT

    def _csat_for(self, conversation_uuid: str) -> tuple[Json, Json] | None:
        conversation = next(
            (c for c in self.conversations.values() if c["uuid"] == conversation_uuid), None
        )
        message = self._csat_message(conversation) if conversation else None
        return (conversation, message) if conversation and message else None

    def _csat_json(self, conversation: Json, message: Json) -> Json:
        return {
            "id": message["id"],
            "csat_survey_response": self.csat_responses.get(message["id"]),
            "display_type": message["content_attributes"].get("display_type", "emoji"),
            "content": (self.inbox.get("csat_config") or {}).get("message") or None,
            "inbox_avatar_url": "",
            "inbox_name": self.inbox["name"],
            "locale": "en",
            "conversation_id": conversation["db_id"],
            "created_at": iso(message["created_at"]),
        }

    async def _show_csat(self, cuuid: str) -> Any:
        found = self._csat_for(cuuid)
        if found is None:
            return NOT_FOUND, 404
        return self._csat_json(*found)

    async def _update_csat(self, cuuid: str) -> Any:
        found = self._csat_for(cuuid)
        if found is None:
            return NOT_FOUND, 404
        conversation, message = found
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        created = datetime.fromtimestamp(message["created_at"], UTC).date()
        if (today - created).days > CSAT_WINDOW_DAYS:
            return {"error": "You cannot update the CSAT survey after 14 days"}, 422
        params = self._params()
        submitted = (params.get("message") or {}).get("submitted_values")
        answer = self._csat_json(conversation, message)  # the row is written asynchronously
        if isinstance(submitted, dict):
            message["content_attributes"] = message["content_attributes"] | {
                "submitted_values": submitted
            }
            message["updated_at"] = self.clock()
            self._emit(self._message_webhook(message, "message_updated"))
            self._store_csat_row(conversation, message, submitted.get("csat_survey_response"))
        return answer

    def _store_csat_row(self, conversation: Json, message: Json, response: Any) -> None:
        """CsatSurveys::ResponseBuilder: one row per message, rating validated 1..5."""
        if not isinstance(response, dict) or response.get("rating") in (None, ""):
            return
        try:
            rating = int(response["rating"])
        except (TypeError, ValueError):
            return
        if not 1 <= rating <= 5:
            return
        now = iso(self.clock())
        row = self.csat_responses.get(message["id"]) or {
            "id": self._next_id("csat", 1),
            "account_id": self.account_id,
            "conversation_id": conversation["db_id"],
            "message_id": message["id"],
            "contact_id": conversation["contact_id"],
            "assigned_agent_id": conversation["assignee_id"],
            "created_at": now,
        }
        row |= {
            "rating": rating,
            "feedback_message": response.get("feedback_message"),
            "updated_at": now,
        }
        self.csat_responses[message["id"]] = row
