"""The fake Discord's data: users, DM channels, messages and their attachments."""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from diswoot.snowflake import DISCORD_EPOCH_MS
from diswoot.testing.fake_discord.records import (
    API_PREFIX,
    FailRule,
    GatewayLike,
    Interaction,
    RecordedRequest,
    Window,
)
from diswoot.testing.openapi import SpecValidator

if TYPE_CHECKING:
    import nacl.signing


class DiscordState:
    """What the fake Discord holds, and the helpers that create it."""

    def __init__(
        self,
        *,
        gateway: GatewayLike | None = None,
        token: str = "test-token",  # noqa: S107 - a fake credential
        application_id: str = "1200000000000000000",
        bot_user_id: str = "1100000000000000000",
        enforce_limits: bool = False,
        route_limit: int = 5,
        route_window: float = 5.0,
        global_limit: int = 50,
        latency: float = 0.0,
        public_key_signer: nacl.signing.SigningKey | None = None,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.enforce_limits = enforce_limits
        self.route_limit = route_limit
        self.route_window = route_window
        self.global_limit = global_limit
        self.latency = latency
        self.public_key_signer = public_key_signer
        self.spec = SpecValidator.load("discord")
        self.check_spec = True  # False skips the (costly) OpenAPI checks, e.g. in benchmarks

        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.attachments: dict[str, tuple[str, bytes]] = {}
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.response_violations: list[str] = []
        self.server_errors: list[str] = []
        self.interaction_responses: dict[str, list[dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self.reactions: list[tuple[str, str, str]] = []
        self.typing: list[str] = []
        self.bucket_violations = 0
        self.global_violations = 0
        self.responses_429 = 0

        self._no_dms: set[str] = set()
        self._dm_by_user: dict[str, str] = {}
        self._interactions: dict[str, Interaction] = {}
        self._nonces: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._fail_rules: list[FailRule] = []
        self._windows: dict[tuple[str, str], Window] = {}
        self._global_sent: collections.deque[float] = collections.deque()
        self._last_snowflake = 0
        self._cdn_secret = secrets.token_bytes(16)
        self._root_url: str | None = None
        self._stop = trio.Event()

        bot = self.add_user(bot_user_id, "diswoot-bot", global_name="Diswoot")
        bot["bot"] = True
        self.bot_user = bot
        if gateway is None:
            from diswoot.testing.fake_gateway import FakeGateway

            gateway = FakeGateway(token=token, bot_user=bot, application_id=application_id)
        self.gateway: GatewayLike = gateway

    @property
    def root_url(self) -> str:
        if self._root_url is None:
            raise RuntimeError("FakeDiscord.serve() has not bound a port yet")
        return self._root_url

    @property
    def api_base_url(self) -> str:
        return self.root_url + API_PREFIX

    # -- state helpers -----------------------------------------------------------------------

    def _snowflake(self) -> str:
        now_ms = int(time.time() * 1000)
        value = max((now_ms - DISCORD_EPOCH_MS) << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return str(value)

    @staticmethod
    def _timestamp() -> str:
        return datetime.now(UTC).isoformat()

    def add_user(
        self,
        user_id: str,
        username: str,
        *,
        global_name: str | None = None,
        avatar: str | None = None,
        accepts_dms: bool = True,
    ) -> dict[str, Any]:
        user = {
            "id": user_id,
            "username": username,
            "avatar": avatar,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "bot": False,
            "banner": None,
            "accent_color": None,
            "global_name": global_name,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        self.users[user_id] = user
        if not accepts_dms:
            self._no_dms.add(user_id)
        return user

    def _user(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.users:
            raise KeyError(f"unknown fake user {user_id}; call add_user first")
        return self.users[user_id]

    def _dm_channel(self, user_id: str) -> dict[str, Any]:
        channel_id = self._dm_by_user.get(user_id)
        if channel_id is None:
            channel_id = self._snowflake()
            self._dm_by_user[user_id] = channel_id
            self.channels[channel_id] = {
                "id": channel_id,
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self._user(user_id)],
            }
            self.messages[channel_id] = []
        return self.channels[channel_id]

    def _sign_cdn(self, path: str) -> str:
        issued = int(time.time())
        ex, is_ = f"{issued + 86400:x}", f"{issued:x}"
        hm = hmac.new(self._cdn_secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()
        return f"{self.root_url}{path}?ex={ex}&is={is_}&hm={hm}"

    def _store_attachment(
        self, channel_id: str, filename: str, content_type: str, data: bytes, **extra: Any
    ) -> dict[str, Any]:
        attachment_id = self._snowflake()
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
        self.attachments[path] = (content_type, data)
        url = self._sign_cdn(path)
        return {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
            **extra,
        }

    def _new_message(
        self,
        channel_id: str,
        author: dict[str, Any],
        fields: Mapping[str, Any],
        attachments: list[dict[str, Any]],
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self._snowflake(),
            "channel_id": channel_id,
            "author": author,
            "type": fields.get("type", 19 if fields.get("message_reference") else 0),
            "content": fields.get("content") or "",
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": fields.get("embeds") or [],
            "components": fields.get("components") or [],
            "timestamp": self._timestamp(),
            "edited_timestamp": None,
            "flags": fields.get("flags") or 0,
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
        }
        for key in (
            "nonce",
            "message_reference",
            "webhook_id",
            "application_id",
            "message_snapshots",
            "poll",
            "sticker_items",
        ):
            if fields.get(key) is not None:
                message[key] = fields[key]
        if "referenced_message" in fields:  # null: the replied-to message was deleted
            message["referenced_message"] = fields["referenced_message"]
        self.messages.setdefault(channel_id, []).append(message)
        self.channels[channel_id]["last_message_id"] = message["id"]
        self.gateway.dispatch("MESSAGE_CREATE", {**message, "channel_type": 1})
        return message
