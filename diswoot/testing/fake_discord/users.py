"""What the fake Discord's users do: DMs (forwards, polls, voice, stickers), edits, deletions,
typing, slash commands, buttons and modals; and the test controls beside them."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import trio

from diswoot.snowflake import DISCORD_EPOCH_MS
from diswoot.testing.fake_discord.records import (
    MAX_FILE_BYTES,
    FailRule,
    Interaction,
)
from diswoot.testing.fake_discord.state import DiscordState

if TYPE_CHECKING:
    import nacl.signing


class DiscordUsers(DiscordState):
    """Simulated user actions, delivered through the gateway (or as HTTP interactions)."""

    # -- simulated user actions --------------------------------------------------------------

    def user_sends(
        self,
        user_id: str,
        content: str,
        *,
        attachments: Iterable[tuple[str, str, bytes]] = (),
    ) -> dict[str, Any]:
        """The user DMs the bot: MESSAGE_CREATE (channel_type 1) through the gateway.

        ``attachments`` are ``(filename, content_type, data)``; their bytes are served at the
        signed URL in the message.
        """
        channel = self._dm_channel(user_id)
        stored = [self._store_attachment(channel["id"], *a) for a in attachments]
        return self._new_message(channel["id"], self._user(user_id), {"content": content}, stored)

    def user_forwards(
        self,
        user_id: str,
        content: str,
        *,
        attachments: Iterable[tuple[str, str, bytes]] = (),
        embeds: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The user forwards a message (from elsewhere) to the bot: empty ``content``, the
        forwarded text and files in ``message_snapshots``, flag HAS_SNAPSHOT."""
        channel = self._dm_channel(user_id)
        stored = [self._store_attachment(channel["id"], *a) for a in attachments]
        origin = self._snowflake()
        snapshot = {
            "type": 0,
            "content": content,
            "mentions": [],
            "mention_roles": [],
            "attachments": stored,
            "embeds": embeds or [],
            "timestamp": self._timestamp(),
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
        }
        fields = {
            "flags": 1 << 14,
            "message_reference": {"type": 1, "channel_id": origin, "message_id": self._snowflake()},
            "message_snapshots": [{"message": snapshot}],
            "type": 0,
        }
        return self._new_message(channel["id"], self._user(user_id), fields, [])

    def user_sends_poll(
        self, user_id: str, question: str, answers: list[str], *, multiselect: bool = False
    ) -> dict[str, Any]:
        """The user DMs a poll: a message whose words are only in ``poll``."""
        channel = self._dm_channel(user_id)
        poll = {
            "question": {"text": question},
            "answers": [
                {"answer_id": n, "poll_media": {"text": text}} for n, text in enumerate(answers, 1)
            ],
            "expiry": self._timestamp(),
            "allow_multiselect": multiselect,
            "layout_type": 1,
            "results": {"answer_counts": [], "is_finalized": False},
        }
        return self._new_message(channel["id"], self._user(user_id), {"poll": poll}, [])

    def user_sends_voice(self, user_id: str, audio: bytes, *, seconds: float) -> dict[str, Any]:
        """The user records a voice message: flag IS_VOICE_MESSAGE, one ogg attachment."""
        channel = self._dm_channel(user_id)
        attachment = self._store_attachment(
            channel["id"],
            "voice-message.ogg",
            "audio/ogg",
            audio,
            duration_secs=seconds,
            waveform="AAAA",
        )
        fields = {"flags": 1 << 13}
        return self._new_message(channel["id"], self._user(user_id), fields, [attachment])

    def user_sends_sticker(self, user_id: str, name: str) -> dict[str, Any]:
        """The user sends a sticker (no text, no file: just ``sticker_items``)."""
        channel = self._dm_channel(user_id)
        fields = {"sticker_items": [{"id": self._snowflake(), "name": name, "format_type": 1}]}
        return self._new_message(channel["id"], self._user(user_id), fields, [])

    def user_replies_to_deleted(self, user_id: str, content: str) -> dict[str, Any]:
        """The user replies to a message that has since been deleted (referenced_message null)."""
        channel = self._dm_channel(user_id)
        fields = {
            "content": content,
            "message_reference": {
                "type": 0,
                "channel_id": channel["id"],
                "message_id": self._snowflake(),
            },
            "referenced_message": None,
        }
        return self._new_message(channel["id"], self._user(user_id), fields, [])

    def _find(self, channel_id: str, message_id: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel_id, []) if m["id"] == message_id), None)

    def user_edits(self, user_id: str, message_id: str, content: str) -> dict[str, Any]:
        """The user edits one of their DMs: MESSAGE_UPDATE."""
        channel_id = self._dm_channel(user_id)["id"]
        message = self._find(channel_id, message_id)
        if message is None or message["author"]["id"] != user_id:
            raise KeyError(f"user {user_id} has no message {message_id}")
        message["content"] = content
        message["edited_timestamp"] = self._timestamp()
        self.gateway.dispatch("MESSAGE_UPDATE", {**message, "channel_type": 1})
        return message

    def user_deletes(self, user_id: str, message_id: str) -> None:
        """The user deletes one of their DMs: MESSAGE_DELETE."""
        channel_id = self._dm_channel(user_id)["id"]
        message = self._find(channel_id, message_id)
        if message is None:
            raise KeyError(f"no message {message_id} in the DM with {user_id}")
        self.messages[channel_id].remove(message)
        self.gateway.dispatch("MESSAGE_DELETE", {"id": message_id, "channel_id": channel_id})

    def user_types(self, user_id: str) -> None:
        """The user starts typing in the DM: TYPING_START (timestamp in unix seconds)."""
        channel_id = self._dm_channel(user_id)["id"]
        self.gateway.dispatch(
            "TYPING_START",
            {"channel_id": channel_id, "user_id": user_id, "timestamp": int(time.time())},
        )

    def _interaction(
        self, user_id: str, kind: int, data: dict[str, Any], message: dict[str, Any] | None
    ) -> dict[str, Any]:
        channel = self._dm_channel(user_id)
        interaction: dict[str, Any] = {
            "id": self._snowflake(),
            "application_id": self.application_id,
            "type": kind,
            "token": secrets.token_urlsafe(48),
            "version": 1,
            "context": 1,
            "channel_id": channel["id"],
            "channel": {"id": channel["id"], "type": 1},
            "user": self._user(user_id),
            "data": data,
            "locale": "en-US",
            "app_permissions": "562949953601536",
            "entitlements": [],
            "authorizing_integration_owners": {"0": "0"},
            "attachment_size_limit": MAX_FILE_BYTES,
        }
        if message is not None:
            interaction["message"] = message
        self._interactions[interaction["id"]] = Interaction(
            interaction, trio.current_time(), original_id=message["id"] if message else None
        )
        return interaction

    def _deliver(self, interaction: dict[str, Any], via_gateway: bool) -> dict[str, Any]:
        if via_gateway:
            self.gateway.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def slash_command(
        self,
        user_id: str,
        name: str,
        options: Mapping[str, Any] | list[dict[str, Any]] | None = None,
        *,
        via_gateway: bool = True,
    ) -> dict[str, Any]:
        """The user runs ``/name`` in the bot DM: INTERACTION_CREATE type 2."""
        if isinstance(options, Mapping):
            types = {bool: 5, int: 4, float: 10, str: 3}
            options = [
                {"name": k, "type": types.get(type(v), 3), "value": v} for k, v in options.items()
            ]
        command = next((c for c in self.commands if c["name"] == name), None)
        data: dict[str, Any] = {
            "id": command["id"] if command else self._snowflake(),
            "name": name,
            "type": 1,
        }
        if options:
            data["options"] = options
        return self._deliver(self._interaction(user_id, 2, data, None), via_gateway)

    def click_button(
        self, user_id: str, message: dict[str, Any], custom_id: str, *, via_gateway: bool = True
    ) -> dict[str, Any]:
        """The user clicks a button on ``message``: INTERACTION_CREATE type 3."""
        data = {"custom_id": custom_id, "component_type": 2}
        return self._deliver(self._interaction(user_id, 3, data, message), via_gateway)

    def submit_modal(
        self,
        user_id: str,
        custom_id: str,
        values: Mapping[str, str],
        message: dict[str, Any] | None = None,
        *,
        via_gateway: bool = True,
    ) -> dict[str, Any]:
        """The user submits a modal: INTERACTION_CREATE type 5 in the Label layout."""
        components = [
            {
                "type": 18,
                "id": 2 * i + 1,
                "component": {"type": 4, "id": 2 * i + 2, "custom_id": key, "value": value},
            }
            for i, (key, value) in enumerate(values.items())
        ]
        data = {"custom_id": custom_id, "components": components}
        return self._deliver(self._interaction(user_id, 5, data, message), via_gateway)

    async def post_interaction_http(
        self,
        url: str,
        interaction: dict[str, Any],
        *,
        signer: nacl.signing.SigningKey | None = None,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """POST an interaction to an HTTP Interactions Endpoint, signed like Discord (Ed25519)."""
        key = signer or self.public_key_signer
        if key is None:
            raise ValueError("no signer: pass signer= or public_key_signer=")
        body = json.dumps(interaction).encode()
        timestamp = str(int(time.time()))
        signature = bytearray(key.sign(timestamp.encode() + body).signature)
        if bad_signature:
            signature[0] ^= 0xFF
        headers = {
            "Content-Type": "application/json",
            "X-Signature-Ed25519": bytes(signature).hex(),
            "X-Signature-Timestamp": timestamp,
            "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)",
        }
        async with httpx.AsyncClient() as client:
            return await client.post(url, content=body, headers=headers)

    def dm_messages(self, user_id: str) -> list[dict[str, Any]]:
        """Messages the bot (or its interaction webhooks) sent in the DM with ``user_id``."""
        channel_id = self._dm_by_user.get(user_id)
        if channel_id is None:
            return []
        return [m for m in self.messages[channel_id] if m["author"]["id"] == self.bot_user_id]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        code: int | None = None,
        times: int = 1,
        retry_after: float = 1.0,
        is_global: bool = False,
        raw_body: bytes | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (path under /api/v10).

        A 429 gets a Discord rate-limit body (``retry_after``, ``is_global``) unless
        ``raw_body`` is given (e.g. Cloudflare HTML).
        """
        self._fail_rules.append(
            FailRule(
                method.upper(),
                re.compile(path_regex),
                status,
                code,
                times,
                retry_after,
                is_global,
                raw_body,
            )
        )

    # -- additions for the no-loss features (backfill, expired attachment URLs) --------------

    def user_sent_earlier(
        self,
        user_id: str,
        content: str,
        *,
        at: float,
        attachments: Iterable[tuple[str, str, bytes]] = (),
    ) -> dict[str, Any]:
        """A DM the user sent at ``at`` (Unix seconds) that no gateway client ever received.

        Only stored (GET messages lists it, by its id made from ``at``); nothing is dispatched.
        """
        channel = self._dm_channel(user_id)
        channel_id = channel["id"]
        value = (int(at * 1000) - DISCORD_EPOCH_MS) << 22
        taken = {m["id"] for m in self.messages[channel_id]}
        while str(value) in taken:
            value += 1
        message: dict[str, Any] = {
            "id": str(value),
            "channel_id": channel_id,
            "author": self._user(user_id),
            "type": 0,
            "content": content,
            "mentions": [],
            "mention_roles": [],
            "attachments": [self._store_attachment(channel_id, *a) for a in attachments],
            "embeds": [],
            "components": [],
            "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
            "edited_timestamp": None,
            "flags": 0,
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
        }
        self.messages[channel_id].append(message)
        last = channel["last_message_id"]
        if last is None or int(last) < value:
            channel["last_message_id"] = message["id"]
        return message

    def expire_cdn_urls(self) -> None:
        """Every signed attachment URL handed out so far stops working (403), as after ``ex``;
        stored messages get freshly signed URLs, so re-fetching a message gives working ones."""
        self._cdn_secret = secrets.token_bytes(16)

        def resigned(attachment: dict[str, Any]) -> dict[str, Any]:
            url = self._sign_cdn(attachment["url"].split("?", 1)[0][len(self.root_url) :])
            return {**attachment, "url": url, "proxy_url": url}

        for messages in self.messages.values():
            for message in messages:
                message["attachments"] = [resigned(a) for a in message["attachments"]]

    # -- additions for the agent-side no-loss features (outbound deletes and retries) -------

    def set_accepts_dms(self, user_id: str, accepts: bool) -> None:
        """The user opens (or closes) their DMs to the bot; closed DMs answer 50007."""
        self._user(user_id)
        if accepts:
            self._no_dms.discard(user_id)
        else:
            self._no_dms.add(user_id)
