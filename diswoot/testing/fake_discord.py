"""FakeDiscord: a faithful fake of the Discord REST API v10 routes Diswoot uses.

It serves a raw ASGI app on ``http://127.0.0.1:<port>`` through ``hypercorn.trio.serve`` and
runs a fake gateway beside it. Every request is recorded and checked against the vendored
OpenAPI spec; responses carry real ``X-RateLimit-*`` headers and, with ``enforce_limits``, the
per-route (per major parameter) buckets and the global 50/s limit are enforced with 429s.
Behaviour follows discord-api.md §3-§6.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from werkzeug.formparser import FormDataParser

from diswoot.snowflake import DISCORD_EPOCH_MS
from diswoot.testing.openapi import SpecValidator

if TYPE_CHECKING:
    import nacl.signing

API_PREFIX = "/api/v10"
MAX_FILE_BYTES = 10 * 1024 * 1024
INTERACTION_ACK_SECONDS = 3.0
INTERACTION_TOKEN_SECONDS = 15 * 60
NONCE_SECONDS = 120.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class GatewayLike(Protocol):
    """What FakeDiscord needs from the fake gateway (``diswoot.testing.fake_gateway``)."""

    url: str
    session_start_limit: dict[str, Any]

    async def serve(self, nursery: trio.Nursery) -> str: ...

    def dispatch(self, event_name: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RecordedFile:
    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the fake saw it (``path`` relative to /api/v10, percent-encoded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    template: str | None = None
    status: int = 0


class _Reply(Exception):
    """Raised by handlers to answer with an error or a specific status."""

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _error(status: int, code: int, message: str, errors: Any = None) -> _Reply:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _Reply(status, body)


def _form_error(path: str, code: str, message: str) -> _Reply:
    node: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        node = {part: node}
    return _error(400, 50035, "Invalid Form Body", node)


@dataclass
class _FailRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int | None
    times: int
    retry_after: float
    is_global: bool
    raw_body: bytes | None


@dataclass
class _Window:
    start: float
    count: int = 0


@dataclass
class _Interaction:
    data: dict[str, Any]
    created: float
    acked: bool = False
    original_id: str | None = None
    deferred: bool = False


def _memory_stream(*_: Any, **__: Any) -> IO[bytes]:
    """Keep uploaded parts in memory (no temporary files to leak)."""
    return io.BytesIO()


def _is_valid_emoji(raw_segment: str) -> bool:
    """A percent-encoded unicode emoji or ``name:id`` (what Discord accepts, roughly)."""
    if "%" not in raw_segment and not raw_segment.isascii():
        return False  # not URL-encoded
    try:
        text = unquote(raw_segment, errors="strict")
    except UnicodeDecodeError:
        return False
    if re.fullmatch(r"[A-Za-z0-9_~]{2,32}:\d{1,20}", text):
        return True
    if not text or text.isascii() or text.endswith("\u200d"):
        return False
    allowed = {"So", "Sk", "Mn", "Me", "Cf"}
    if not all(unicodedata.category(c) in allowed or c.isdigit() or c in "#*" for c in text):
        return False
    # Discord rejects an added VS16 after a character it knows without one (DAD issue #864).
    return not re.search("[\u2714\u2716\u2705]\ufe0f", text)


class FakeDiscord:
    """Fake Discord REST + gateway for tests and the sandbox (real sockets on 127.0.0.1)."""

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
        self._interactions: dict[str, _Interaction] = {}
        self._nonces: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._fail_rules: list[_FailRule] = []
        self._windows: dict[tuple[str, str], _Window] = {}
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

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        if self._root_url is None:
            raise RuntimeError("FakeDiscord.serve() has not bound a port yet")
        return self._root_url

    @property
    def api_base_url(self) -> str:
        return self.root_url + API_PREFIX

    async def serve(self, nursery: trio.Nursery) -> None:
        """Start the REST server and the gateway in ``nursery``; returns once both listen."""
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        config.h2_max_concurrent_streams = 1000
        app: Any = self._asgi  # a plain ASGI callable; hypercorn's TypedDict scopes aside
        urls: list[str] = await nursery.start(
            partial(hypercorn_serve, app, config, shutdown_trigger=self._stop.wait)
        )
        self._root_url = urls[0].rstrip("/")
        await self.gateway.serve(nursery)

    def close(self) -> None:
        """Ask the HTTP server to shut down gracefully."""
        self._stop.set()

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
            "nonce", "message_reference", "webhook_id", "application_id", "message_snapshots",
            "poll", "sticker_items",
        ):
            if fields.get(key) is not None:
                message[key] = fields[key]
        if "referenced_message" in fields:  # null: the replied-to message was deleted
            message["referenced_message"] = fields["referenced_message"]
        self.messages.setdefault(channel_id, []).append(message)
        self.channels[channel_id]["last_message_id"] = message["id"]
        self.gateway.dispatch("MESSAGE_CREATE", {**message, "channel_type": 1})
        return message

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
            channel["id"], "voice-message.ogg", "audio/ogg", audio,
            duration_secs=seconds, waveform="AAAA",
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
                "type": 0, "channel_id": channel["id"], "message_id": self._snowflake(),
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
        self._interactions[interaction["id"]] = _Interaction(
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
            _FailRule(
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

    # -- ASGI --------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-request: nothing arrived, nothing happens
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            status, headers, payload = await self._handle(scope, bytes(body))
        except Exception as exc:  # a bug in the fake: make it visible to the test
            self.server_errors.append(f"{scope['method']} {scope['path']}: {exc!r}")
            status, headers, payload = 500, {"content-type": "text/plain"}, repr(exc).encode()
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, scope: Scope, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.latency:
            await trio.sleep(self.latency)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        full_path = raw_path.decode("ascii", "replace").split("?", 1)[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] == "GET" and full_path.startswith("/attachments/"):
            return self._serve_attachment(full_path, scope["query_string"].decode())
        if not full_path.startswith(API_PREFIX + "/"):
            return 404, {"content-type": "application/json"}, b'{"message": "404: Not Found"}'
        path = full_path[len(API_PREFIX) :]
        method = scope["method"]
        query = dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True))
        json_body, form, files = self._decode_body(headers, body)
        op = self.spec.match(method, path)
        record = RecordedRequest(
            method, path, query, headers, json_body, files, op.template if op else None
        )
        self.requests.append(record)
        violations = (
            self.spec.check_request(method, path, query=query, json_body=json_body, form=form)
            if self.check_spec
            else []
        )
        self.violations += violations
        rate_headers: dict[str, str] = {}
        try:
            if op is None:
                raise _error(404, 0, "404: Not Found")
            rate_headers = self._rate_limit(method, op.template, path, op.regex.match(path))
            self._apply_fail_rules(method, path)
            if not self._exempt_from_auth(op.template) and headers.get("authorization") != (
                f"Bot {self.token}"
            ):
                raise _error(401, 0, "401: Unauthorized")
            if violations:
                raise _error(400, 50035, "Invalid Form Body", {"_spec": violations})
            match = op.regex.match(path)
            assert match is not None
            status, result = await self._route(
                op.operation_id, match.groupdict(), query, json_body, files
            )
        except _Reply as reply:
            status, result = reply.status, reply.body
            rate_headers.update(reply.headers)
        record.status = status
        if status == 429:
            self.responses_429 += 1
        if op is not None and status != 429 and not isinstance(result, bytes) and self.check_spec:
            self.response_violations += self.spec.check_response(method, path, status, result)
        out_headers = dict(rate_headers)
        if isinstance(result, bytes):
            out_headers.setdefault("content-type", "text/html")
            return status, out_headers, result
        if result is None:
            return status, out_headers, b""
        out_headers["content-type"] = "application/json"
        return status, out_headers, json.dumps(result).encode()

    @staticmethod
    def _exempt_from_auth(template: str) -> bool:
        return template.startswith("/interactions/") or "{webhook_token}" in template

    def _decode_body(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[Any, dict[str, Any] | None, list[RecordedFile]]:
        content_type = headers.get("content-type", "")
        if not body:
            return None, None, []
        if content_type.startswith("multipart/form-data"):
            mimetype, _, params = content_type.partition(";")
            options = dict(p.strip().split("=", 1) for p in params.split(";") if "=" in p)
            options = {k: v.strip('"') for k, v in options.items()}
            parser = FormDataParser(
                _memory_stream, max_form_memory_size=None, max_content_length=None
            )
            _, form_data, file_data = parser.parse(
                io.BytesIO(body), mimetype.strip(), len(body), options
            )
            form = dict(form_data.items())
            files = []
            for name, storage in file_data.items(multi=True):
                try:
                    data = storage.read()
                finally:
                    storage.close()
                files.append(
                    RecordedFile(name, storage.filename or "", storage.content_type or "", data)
                )
            for f in files:
                form[f.name] = f.filename
            payload = form.get("payload_json")
            parsed = None
            if payload is not None:
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = None
            return parsed, form, files
        try:
            return json.loads(body), None, []
        except ValueError:
            return None, {"_raw": body.decode("utf-8", "replace")}, []

    def _serve_attachment(self, path: str, query: str) -> tuple[int, dict[str, str], bytes]:
        stored = self.attachments.get(unquote(path))
        params = dict(parse_qsl(query))
        if stored is None:
            return 404, {"content-type": "text/plain"}, b"Not Found"
        expected = hmac.new(
            self._cdn_secret,
            f"{unquote(path)}|{params.get('ex')}|{params.get('is')}".encode(),
            hashlib.sha256,
        ).hexdigest()
        if not hmac.compare_digest(expected, params.get("hm", "")):
            return 403, {"content-type": "text/plain"}, b"This content is no longer available."
        content_type, data = stored
        return 200, {"content-type": content_type}, data

    # -- rate limits -------------------------------------------------------------------------

    @staticmethod
    def _route_group(method: str, template: str) -> str:
        if "/reactions" in template:
            return "reactions"
        return f"{method} {template}"

    @staticmethod
    def _major(params: Mapping[str, str]) -> str:
        if "webhook_id" in params and "webhook_token" in params:
            return f"{params['webhook_id']}/{params['webhook_token']}"
        for name in ("channel_id", "guild_id", "webhook_id", "interaction_id"):
            if name in params:
                return params[name]
        return ""

    def _rate_limit(
        self, method: str, template: str, path: str, match: re.Match[str] | None
    ) -> dict[str, str]:
        now = trio.current_time()
        group = self._route_group(method, template)
        bucket_hash = hashlib.sha1(group.encode(), usedforsecurity=False).hexdigest()[:32]
        key = (bucket_hash, self._major(match.groupdict() if match else {}))
        is_global = not self._exempt_from_auth(template)
        if is_global:
            while self._global_sent and self._global_sent[0] <= now - 1.0:
                self._global_sent.popleft()
            if len(self._global_sent) >= self.global_limit:
                self.global_violations += 1
                if self.enforce_limits:
                    retry_after = round(self._global_sent[0] + 1.0 - now, 3)
                    raise _Reply(
                        429,
                        {
                            "message": "You are being rate limited.",
                            "retry_after": retry_after,
                            "global": True,
                            "code": 0,
                        },
                        {"x-ratelimit-global": "true", "x-ratelimit-scope": "global"},
                    )
        window = self._windows.get(key)
        if window is None or now >= window.start + self.route_window:
            window = self._windows[key] = _Window(now)
        reset_after = window.start + self.route_window - now
        headers = {
            "x-ratelimit-limit": str(self.route_limit),
            "x-ratelimit-bucket": bucket_hash,
            "x-ratelimit-reset-after": f"{reset_after:.3f}",
            "x-ratelimit-reset": f"{time.time() + reset_after:.3f}",
        }
        if window.count >= self.route_limit:
            self.bucket_violations += 1
            if self.enforce_limits:
                headers["x-ratelimit-remaining"] = "0"
                headers["x-ratelimit-scope"] = "user"
                headers["retry-after"] = f"{reset_after:.3f}"
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": round(reset_after, 3),
                    "global": False,
                    "code": 0,
                }
                raise _Reply(429, body, headers)
        window.count += 1
        if is_global:
            self._global_sent.append(now)
        headers["x-ratelimit-remaining"] = str(max(self.route_limit - window.count, 0))
        return headers

    def _apply_fail_rules(self, method: str, path: str) -> None:
        for rule in self._fail_rules:
            if rule.times > 0 and rule.method == method and rule.pattern.search(path):
                rule.times -= 1
                if rule.raw_body is not None:
                    raise _Reply(rule.status, rule.raw_body)
                if rule.status == 429:
                    headers = {"x-ratelimit-scope": "global" if rule.is_global else "user"}
                    if rule.is_global:
                        headers["x-ratelimit-global"] = "true"
                    body = {
                        "message": "You are being rate limited.",
                        "retry_after": rule.retry_after,
                        "global": rule.is_global,
                        "code": 0,
                    }
                    raise _Reply(429, body, headers)
                message = f"{rule.status}: injected failure"
                raise _error(rule.status, rule.code if rule.code is not None else 0, message)

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
            raise _error(405, 0, f"405: {operation_id} is not implemented by FakeDiscord")
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
            raise _error(404, 10013, "Unknown User")
        return 200, user

    def _create_dm(self, body: Any, **_: Any) -> tuple[int, Any]:
        recipient = (body or {}).get("recipient_id")
        if recipient == self.bot_user_id:
            raise _error(400, 50007, "Cannot send messages to this user")
        if recipient not in self.users:
            raise _error(404, 10013, "Unknown User")
        return 200, self._dm_channel(recipient)

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise _error(404, 10003, "Unknown Channel")
        return channel

    def _message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        self._channel(channel_id)
        message = self._find(channel_id, message_id)
        if message is None:
            raise _error(404, 10008, "Unknown Message")
        return message

    @staticmethod
    def _check_message_fields(body: Mapping[str, Any]) -> None:
        content = body.get("content")
        if content is not None and len(content) > 2000:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        limits = {"title": 256, "description": 4096}
        total = 0
        for i, embed in enumerate(embeds):
            for name, limit in limits.items():
                text = (embed.get(name) or "").strip()
                total += len(text)
                if len(text) > limit:
                    raise _form_error(
                        f"embeds.{i}.{name}",
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {limit} or fewer in length.",
                    )
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise _form_error(f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Too many fields.")
            for j, item in enumerate(fields):
                for name, limit in (("name", 256), ("value", 1024)):
                    text = str(item.get(name, "")).strip()
                    total += len(text)
                    if not text or len(text) > limit:
                        raise _form_error(
                            f"embeds.{i}.fields.{j}.{name}",
                            "BASE_TYPE_BAD_LENGTH",
                            f"Must be between 1 and {limit} in length.",
                        )
            total += len(((embed.get("footer") or {}).get("text") or "").strip())
            total += len(((embed.get("author") or {}).get("name") or "").strip())
        if total > 6000:
            raise _form_error(
                "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
            )

    def _attachments_from(
        self, channel_id: str, body: Mapping[str, Any], files: list[RecordedFile]
    ) -> list[dict[str, Any]]:
        for f in files:
            if len(f.data) > MAX_FILE_BYTES:
                raise _error(413, 40005, "Request entity too large")
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
            raise _error(403, 50007, "Cannot send messages to this user")
        if (
            not any(body.get(k) for k in ("content", "embeds", "components", "sticker_ids", "poll"))
            and not files
        ):
            raise _error(400, 50006, "Cannot send an empty message")
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
            raise _error(403, 50005, "Cannot edit a message authored by another user")
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
            raise _error(403, 50003, "Cannot execute action on a DM channel")
        self.messages[params["channel_id"]].remove(message)
        self.gateway.dispatch(
            "MESSAGE_DELETE", {"id": message["id"], "channel_id": message["channel_id"]}
        )
        return 204, None

    def _add_reaction(self, params: dict[str, str], **_: Any) -> tuple[int, Any]:
        self._message(params["channel_id"], params["message_id"])
        raw = params["emoji_name"]
        if not _is_valid_emoji(raw):
            raise _error(400, 10014, "Unknown Emoji")
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

    def _live_interaction(self, interaction_id: str, token: str) -> _Interaction:
        state = self._interactions.get(interaction_id)
        if state is None or not hmac.compare_digest(state.data["token"], token):
            raise _error(404, 10062, "Unknown interaction")
        return state

    def _interaction_callback(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        state = self._live_interaction(params["interaction_id"], params["interaction_token"])
        if trio.current_time() - state.created > INTERACTION_ACK_SECONDS:
            raise _error(404, 10062, "Unknown interaction")
        if state.acked:
            raise _error(400, 40060, "Interaction has already been acknowledged.")
        body = body or {}
        kind = body.get("type")
        if kind == 9 and state.data["type"] == 5:
            raise _form_error(
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

    def _webhook_interaction(self, params: dict[str, str]) -> _Interaction:
        if params["webhook_id"] != self.application_id:
            raise _error(404, 10015, "Unknown Webhook")
        token = params["webhook_token"]
        state = next(
            (s for s in self._interactions.values() if hmac.compare_digest(s.data["token"], token)),
            None,
        )
        if state is None or trio.current_time() - state.created > INTERACTION_TOKEN_SECONDS:
            raise _error(401, 50027, "Invalid Webhook Token")
        return state

    def _edit_original(
        self, params: dict[str, str], body: Any, files: list[RecordedFile], **_: Any
    ) -> tuple[int, Any]:
        state = self._webhook_interaction(params)
        if not state.acked or state.original_id is None:
            raise _error(404, 10008, "Unknown Message")
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
            raise _error(404, 10015, "Unknown Webhook")
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
            raise _error(403, 50001, "Missing Access")
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
