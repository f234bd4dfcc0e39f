"""The fake Discord's REST routes, with Discord's answers and error codes."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import trio

from diswoot.testing.fake_discord.records import (
    INTERACTION_ACK_SECONDS,
    INTERACTION_TOKEN_SECONDS,
    MAX_FILE_BYTES,
    NONCE_SECONDS,
    Interaction,
    RecordedFile,
    error_reply,
    form_error,
    is_valid_emoji,
)
from diswoot.testing.fake_discord.users import DiscordUsers


class DiscordRoutes(DiscordUsers):
    """One handler per REST route Diswoot uses (discord-api.md §3-§6)."""

    # -- routes ------------------------------------------------------------------------------

    async def _route(
        self,
        operation_id: str,
        params: dict[str, str],
        query: dict[str, str],
        body: Any,
        files: list[RecordedFile],
    ) -> tuple[int, Any]:
        handlers: dict[str, Callable[..., tuple[int, Any]]] = {
            "get_bot_gateway": self._get_gateway_bot,
            "get_my_user": lambda **_: (200, self._me()),
            "get_my_application": self._get_application,
            "get_user": self._get_user,
            "create_dm": self._create_dm,
            "create_message": self._create_message,
            "update_message": self._edit_message,
            "delete_message": self._delete_message,
            "add_my_message_reaction": self._add_reaction,
            "trigger_typing_indicator": self._trigger_typing,
            "list_messages": self._list_messages,
            "create_interaction_response": self._interaction_callback,
            "update_original_webhook_message": self._edit_original,
            "execute_webhook": self._followup,
            "bulk_set_application_commands": self._bulk_commands,
        }
        handler = handlers.get(operation_id)
        if handler is None:
            raise error_reply(405, 0, f"405: {operation_id} is not implemented by FakeDiscord")
        return handler(params=params, query=query, body=body, files=files)

    def _me(self) -> dict[str, Any]:
        return {**self.bot_user, "mfa_enabled": False, "locale": "en-US", "verified": True}

    def _get_gateway_bot(self, **_: Any) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway.url,
            "shards": 1,
            "session_start_limit": self.gateway.session_start_limit,
        }

    def _get_application(self, **_: Any) -> tuple[int, Any]:
        return 200, {
            "id": self.application_id,
            "name": "Diswoot",
            "icon": None,
            "description": "",
            "type": None,
            "bot": self.bot_user,
            "verify_key": self.public_key_signer.verify_key.encode().hex()
            if self.public_key_signer
            else "0" * 64,
            "flags": 0,
            "flags_new": "0",
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": self.bot_user,
            "approximate_guild_count": 1,
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": [],
        }

    def _get_user(self, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        user = self.users.get(params["user_id"])
        if user is None:
            raise error_reply(404, 10013, "Unknown User")
        return 200, user

    def _create_dm(self, body: Any, **_: Any) -> tuple[int, Any]:
        recipient = (body or {}).get("recipient_id")
        if recipient == self.bot_user_id:
            raise error_reply(400, 50007, "Cannot send messages to this user")
        if recipient not in self.users:
            raise error_reply(404, 10013, "Unknown User")
        return 200, self._dm_channel(recipient)

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise error_reply(404, 10003, "Unknown Channel")
        return channel

    def _message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        self._channel(channel_id)
        message = self._find(channel_id, message_id)
        if message is None:
            raise error_reply(404, 10008, "Unknown Message")
        return message

    @staticmethod
    def _check_message_fields(body: Mapping[str, Any]) -> None:
        content = body.get("content")
        if content is not None and len(content) > 2000:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        limits = {"title": 256, "description": 4096}
        total = 0
        for i, embed in enumerate(embeds):
            for name, limit in limits.items():
                text = (embed.get(name) or "").strip()
                total += len(text)
                if len(text) > limit:
                    raise form_error(
                        f"embeds.{i}.{name}",
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {limit} or fewer in length.",
                    )
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise form_error(f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Too many fields.")
            for j, item in enumerate(fields):
                for name, limit in (("name", 256), ("value", 1024)):
                    text = str(item.get(name, "")).strip()
                    total += len(text)
                    if not text or len(text) > limit:
                        raise form_error(
                            f"embeds.{i}.fields.{j}.{name}",
                            "BASE_TYPE_BAD_LENGTH",
                            f"Must be between 1 and {limit} in length.",
                        )
            total += len(((embed.get("footer") or {}).get("text") or "").strip())
            total += len(((embed.get("author") or {}).get("name") or "").strip())
        if total > 6000:
            raise form_error(
                "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
            )

    def _attachments_from(
        self, channel_id: str, body: Mapping[str, Any], files: list[RecordedFile]
    ) -> list[dict[str, Any]]:
        for f in files:
            if len(f.data) > MAX_FILE_BYTES:
                raise error_reply(413, 40005, "Request entity too large")
        described = {str(a.get("id")): a for a in body.get("attachments") or []}
        stored = []
        for f in files:
            index = f.name.removeprefix("files[").removesuffix("]")
            meta = described.get(index, {})
            extra: dict[str, Any] = {}
            if meta.get("description"):
                extra["description"] = meta["description"]
            if meta.get("is_spoiler"):
                extra["flags"] = 1 << 3
            filename = meta.get("filename") or f.filename
            stored.append(
                self._store_attachment(channel_id, filename, f.content_type, f.data, **extra)
            )
        return stored

    def _create_message(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        channel = self._channel(params["channel_id"])
        body = body or {}
        recipient = channel["recipients"][0]["id"]
        if recipient in self._no_dms:
            raise error_reply(403, 50007, "Cannot send messages to this user")
        if (
            not any(body.get(k) for k in ("content", "embeds", "components", "sticker_ids", "poll"))
            and not files
        ):
            raise error_reply(400, 50006, "Cannot send an empty message")
        self._check_message_fields(body)
        nonce = body.get("nonce")
        now = trio.current_time()
        if nonce is not None and body.get("enforce_nonce"):
            seen = self._nonces.get((channel["id"], str(nonce)))
            if seen is not None and now - seen[0] < NONCE_SECONDS:
                return 200, seen[1]
        attachments = self._attachments_from(channel["id"], body, files)
        message = self._new_message(channel["id"], self.bot_user, body, attachments)
        if nonce is not None:
            self._nonces[(channel["id"], str(nonce))] = (now, message)
        return 200, message

    def _edit_message(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        message = self._message(params["channel_id"], params["message_id"])
        if message["author"]["id"] != self.bot_user_id:
            raise error_reply(403, 50005, "Cannot edit a message authored by another user")
        body = body or {}
        self._check_message_fields(body)
        self._update_message(message, body, files)
        return 200, message

    def _update_message(
        self, message: dict[str, Any], body: Mapping[str, Any], files: list[RecordedFile]
    ) -> None:
        for key in ("content", "embeds", "components", "flags"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        if "attachments" in body or files:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in keep]
            message["attachments"] = kept + self._attachments_from(
                message["channel_id"], body, files
            )
        message["edited_timestamp"] = self._timestamp()
        self.gateway.dispatch("MESSAGE_UPDATE", {**message, "channel_type": 1})

    def _delete_message(self, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        message = self._message(params["channel_id"], params["message_id"])
        if message["author"]["id"] != self.bot_user_id:
            raise error_reply(403, 50003, "Cannot execute action on a DM channel")
        self.messages[params["channel_id"]].remove(message)
        self.gateway.dispatch(
            "MESSAGE_DELETE", {"id": message["id"], "channel_id": message["channel_id"]}
        )
        return 204, None

    def _add_reaction(self, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        self._message(params["channel_id"], params["message_id"])
        raw = params["emoji_name"]
        if not is_valid_emoji(raw):
            raise error_reply(400, 10014, "Unknown Emoji")
        self.reactions.append((params["channel_id"], params["message_id"], unquote(raw)))
        return 204, None

    def _trigger_typing(self, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        self._channel(params["channel_id"])
        self.typing.append(params["channel_id"])
        return 204, None

    def _list_messages(
        self, params: dict[str, str], query: dict[str, str], **_: Any
    ) -> tuple[int, Any]:
        self._channel(params["channel_id"])
        limit = int(query.get("limit", "50"))
        ordered = sorted(self.messages[params["channel_id"]], key=lambda m: int(m["id"]))
        if "after" in query:
            after = int(query["after"])
            page = [m for m in ordered if int(m["id"]) > after][:limit]
        elif "before" in query:
            before = int(query["before"])
            page = [m for m in ordered if int(m["id"]) < before][-limit:]
        elif "around" in query:
            around = int(query["around"])
            older = [m for m in ordered if int(m["id"]) < around]
            newer = [m for m in ordered if int(m["id"]) >= around]
            half = limit // 2
            page = older[-half:] if half else []
            page += newer[: limit - len(page)]
        else:
            page = ordered[-limit:]
        return 200, list(reversed(page))

    def _live_interaction(self, interaction_id: str, token: str) -> Interaction:
        state = self._interactions.get(interaction_id)
        if state is None or not hmac.compare_digest(state.data["token"], token):
            raise error_reply(404, 10062, "Unknown interaction")
        return state

    def _interaction_callback(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        state = self._live_interaction(params["interaction_id"], params["interaction_token"])
        if trio.current_time() - state.created > INTERACTION_ACK_SECONDS:
            raise error_reply(404, 10062, "Unknown interaction")
        if state.acked:
            raise error_reply(400, 40060, "Interaction has already been acknowledged.")
        body = body or {}
        kind = body.get("type")
        if kind == 9 and state.data["type"] == 5:
            raise form_error(
                "type", "INTERACTION_CALLBACK_INVALID", "Cannot respond to a modal with a modal"
            )
        state.acked = True
        self.interaction_responses.setdefault(state.data["id"], []).append(body)
        data = body.get("data") or {}
        channel_id = state.data["channel_id"]
        if kind == 4:
            self._check_message_fields(data)
            attachments = self._attachments_from(channel_id, data, files)
            message = self._new_message(
                channel_id, self.bot_user, self._webhook_fields(data), attachments
            )
            state.original_id = message["id"]
        elif kind == 5:
            fields = self._webhook_fields({"flags": data.get("flags", 0)})
            message = self._new_message(channel_id, self.bot_user, fields, [])
            state.original_id = message["id"]
            state.deferred = True
        elif kind == 7 and state.original_id is not None:
            original = self._find(channel_id, state.original_id)
            if original is not None:
                self._update_message(original, data, files)
        return 204, None

    def _webhook_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {**data, "webhook_id": self.application_id, "application_id": self.application_id}

    def _webhook_interaction(self, params: dict[str, str]) -> Interaction:
        if params["webhook_id"] != self.application_id:
            raise error_reply(404, 10015, "Unknown Webhook")
        token = params["webhook_token"]
        state = next(
            (s for s in self._interactions.values() if hmac.compare_digest(s.data["token"], token)),
            None,
        )
        if state is None or trio.current_time() - state.created > INTERACTION_TOKEN_SECONDS:
            raise error_reply(401, 50027, "Invalid Webhook Token")
        return state

    def _edit_original(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        state = self._webhook_interaction(params)
        if not state.acked or state.original_id is None:
            raise error_reply(404, 10008, "Unknown Message")
        message = self._message(state.data["channel_id"], state.original_id)
        body = body or {}
        self._check_message_fields(body)
        self._update_message(message, body, files)
        self.interaction_responses.setdefault(state.data["id"], []).append({"edit_original": body})
        state.deferred = False  # the loading message is resolved
        return 200, message

    def _followup(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        state = self._webhook_interaction(params)
        if not state.acked:
            raise error_reply(404, 10015, "Unknown Webhook")
        body = body or {}
        self._check_message_fields(body)
        self.interaction_responses.setdefault(state.data["id"], []).append({"followup": body})
        if state.deferred and state.original_id is not None:
            state.deferred = False  # the first follow-up after a defer edits the loading message
            message = self._message(state.data["channel_id"], state.original_id)
            self._update_message(message, body, files)
            return 200, message
        channel_id = state.data["channel_id"]
        attachments = self._attachments_from(channel_id, body, files)
        return 200, self._new_message(
            channel_id, self.bot_user, self._webhook_fields(body), attachments
        )

    def _bulk_commands(self, params: dict[str, str], body: Any, **_: Any) -> tuple[int, Any]:
        if params["application_id"] != self.application_id:
            raise error_reply(403, 50001, "Missing Access")
        existing = {c["name"]: c for c in self.commands}
        result = []
        for command in body or []:
            previous = existing.get(command["name"])
            result.append(
                {
                    "id": previous["id"] if previous else self._snowflake(),
                    "application_id": self.application_id,
                    "version": self._snowflake(),
                    "default_member_permissions": None,
                    "type": command.get("type", 1),
                    "name": command["name"],
                    "description": command.get("description", ""),
                    **{
                        k: v
                        for k, v in command.items()
                        if k in ("options", "contexts", "integration_types")
                    },
                }
            )
        self.commands = result
        return 200, result
