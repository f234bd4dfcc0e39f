"""FakeChatwoot: a small, faithful Chatwoot v4.15.1 (one account, one API inbox) for tests.

A real QuartTrio app served by hypercorn on 127.0.0.1:0. It keeps contacts, contact_inboxes,
conversations and messages in dicts, answers the REST and public endpoints Diswoot uses with the
shapes of ``chatwoot-api.md`` / ``chatwoot-reconcile.md``, and sends webhooks the way Chatwoot
does (Rails JSON, ``X-Chatwoot-Delivery``, timestamped HMAC signature, one attempt, 5 s timeout).

Webhooks leave through one sender task in the nursery given to :meth:`FakeChatwoot.serve`, in
the order the events happened. Agent-side actions (``agent_reply``, ``set_status``...) return
only after their webhooks were delivered (or lost, with ``deliver=False``); events caused by
REST calls are queued, and :meth:`FakeChatwoot.wait_webhooks_delivered` waits for all of them.

``webhook_urls[0]`` plays the API inbox's ``webhook_url``: a failed delivery of a message event
marks that message ``failed`` with ``external_error`` like Chatwoot does (§1.4). Further URLs
play account webhooks subscribed to every event. Contact and inbox events are not sent.
"""

from __future__ import annotations

import hashlib
import hmac
import http
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig
from quart import Response, g, request
from quart_trio import QuartTrio

from diswoot.testing.openapi import SpecValidator

Json = dict[str, Any]

MESSAGE_TYPES = ("incoming", "outgoing", "activity", "template")
INCOMING, OUTGOING, ACTIVITY, TEMPLATE = range(4)
STATUSES = ("open", "resolved", "pending", "snoozed")
MESSAGE_STATUSES = ("sent", "delivered", "read", "failed")
DELETED_TEXT = "This message was deleted"
SEARCH_PAGE_SIZE = 15
SEARCH_LIMIT_PER_MINUTE = 100
CONVERSATIONS_PER_PAGE = 25
MESSAGES_PER_MINUTE = 200
MAX_ATTACHMENTS = 15
MAX_CONTENT = 150_000
CSAT_WINDOW_DAYS = 14
WEBHOOK_TIMEOUT = 5.0
NOT_FOUND: Json = {"error": "Resource could not be found"}
# Conversation attributes whose change fires conversation_updated (§2.5).
TRACKED_CONVERSATION_ATTRIBUTES = (
    "team_id",
    "assignee_id",
    "status",
    "snoozed_until",
    "custom_attributes",
    "label_list",
    "waiting_since",
    "first_reply_created_at",
    "priority",
)
# Real routes the prose docs describe but the vendored swagger lacks: not spec-checked.
SPEC_GAPS = (
    ("PATCH", re.compile(r"^/api/v1/accounts/\d+/conversations/\d+/messages/\d+$")),
    ("PUT", re.compile(r"^/api/v1/accounts/\d+/conversations/\d+/messages/\d+$")),
    ("PATCH", re.compile(r"^/api/v1/accounts/\d+/contacts/\d+$")),
    ("*", re.compile(r"^/public/api/v1/csat_survey/[^/]+$")),
)
_FILE_TYPES = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/gif": "image",
    "image/bmp": "image",
    "image/webp": "image",
    "video/mp4": "video",
    "video/ogg": "video",
    "video/webm": "video",
    "video/quicktime": "video",
}


@dataclass
class RecordedFile:
    """One uploaded file part."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request the fake received (``status`` is filled in once answered)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    form: dict[str, str]
    files: list[RecordedFile]
    headers: dict[str, str]
    status: int = 0


class WebhookDelivery(NamedTuple):
    """One webhook POST; ``status`` is None when the request itself failed (timeout, refused)."""

    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    body: Any


@dataclass
class _Event:
    payload: Json
    done: trio.Event = field(default_factory=trio.Event)


def rails_json(payload: Any) -> bytes:
    """``payload.to_json`` as Rails writes it: compact, UTF-8, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode()


def iso(epoch: float) -> str:
    """Rails JSON time: ISO-8601 UTC with milliseconds."""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def default_working_hours() -> list[Json]:
    """Chatwoot's defaults: Mon-Fri 09:00-17:00, Saturday and Sunday closed."""
    hours = []
    for day in range(7):
        closed = day in (0, 6)
        hours.append(
            {
                "day_of_week": day,
                "closed_all_day": closed,
                "open_hour": None if closed else 9,
                "open_minutes": None if closed else 0,
                "close_hour": None if closed else 17,
                "close_minutes": None if closed else 0,
                "open_all_day": False,
            }
        )
    return hours


class FakeChatwoot:
    """One Chatwoot account with one API inbox; see the module docstring."""

    def __init__(
        self,
        *,
        account_id: int = 1,
        inbox_id: int = 7,
        api_token: str = "test-chatwoot-token",  # noqa: S107  (the fake credential)
        inbox: dict[str, Any] | None = None,
        webhook_urls: Sequence[str] = (),
        webhook_secret: str | None = None,
        latency: float = 0.0,
        version: str = "4.15.1",
        rack_attack_limit: int | None = None,
        rack_attack_period: float = 60.0,
    ) -> None:
        self.account_id = account_id
        self.inbox_id = inbox_id
        self.api_token = api_token
        self.webhook_urls = list(webhook_urls)
        self.webhook_secret = webhook_secret
        self.latency = latency
        self.echo_incoming = True  # False: no webhook for incoming messages (benchmarks)
        self.echo_receipts = True  # False: a status update through the API fires no webhook
        self.rack_attack_limit = rack_attack_limit  # None: off (Chatwoot's default is 3000)
        self.rack_attack_period = rack_attack_period
        self.throttled: list[float] = []  # when each global 429 was answered (self.clock)
        self._ip_hits: tuple[int, int] = (-1, 0)  # (window, requests in it)
        self.check_spec = True  # False skips the (costly) OpenAPI checks, e.g. in benchmarks
        self.version = version
        self.clock: Callable[[], float] = time.time
        self.base_url = ""
        self.account: Json = {"id": account_id, "name": "Acme"}
        self.user: Json = {
            "id": 1,
            "name": "Diswoot Bridge",
            "email": "bridge@acme.test",
            "role": "administrator",
        }
        self.agent: Json = {"id": 3, "name": "Bob", "email": "bob@acme.test"}
        self.inbox: Json = self._default_inbox() | dict(inbox or {})
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.lost_webhooks: list[Json] = []
        self.contacts: dict[int, Json] = {}
        self.contact_inboxes: dict[int, Json] = {}
        self.conversations: dict[int, Json] = {}
        self.messages: dict[int, Json] = {}
        self._by_conversation: dict[int, list[Json]] = {}  # see _messages_of
        self._indexed = 0
        self.attachment_blobs: dict[int, bytes] = {}
        self.csat_responses: dict[int, Json] = {}
        self.down = False
        self._failures: list[_Failure] = []
        self._search_hits: dict[tuple[int, int], int] = {}
        self._ids: dict[str, int] = {}
        self._spec = SpecValidator.load("chatwoot")
        self._events_tx: trio.MemorySendChannel[_Event] | None = None
        self._pending = 0
        self._idle = trio.Event()
        self._idle.set()
        self._capture: list[trio.Event] | None = None
        self._deliver = True
        self._stop = trio.Event()
        self.app = self._build_app()

    # ================================================================== lifecycle

    async def serve(self, nursery: trio.Nursery) -> None:
        """Bind 127.0.0.1:0, start the webhook sender; sets :attr:`base_url`."""
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        binds = await nursery.start(
            partial(hypercorn.trio.serve, self.app, config, shutdown_trigger=self._stop.wait)
        )
        self.base_url = binds[0]
        # Unbounded like Chatwoot's Sidekiq queue: request handlers never wait for delivery.
        send, receive = trio.open_memory_channel[_Event](math.inf)
        self._events_tx = send
        nursery.start_soon(self._send_webhooks, receive)

    def stop(self) -> None:
        """Ask hypercorn to shut down (the nursery's cancellation does it too)."""
        self._stop.set()

    async def wait_webhooks_delivered(self) -> None:
        """Return once every queued webhook has been attempted."""
        await self._idle.wait()

    # ================================================================== test controls

    def fail_next(
        self, method: str, path_regex: str, status: int, *, times: int = 1, body: Any = None
    ) -> None:
        """Answer the next ``times`` matching requests (``re.search`` on the path) with status."""
        self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, times, body))

    def lose_next_answer(self, path_suffix: str, *, delay: float = 0.0) -> list[int]:
        """Handle the next POST to a path ending in ``path_suffix``, but lose its answer: it
        comes ``delay`` seconds late and as a 502 (a proxy gave up).  The returned list gets
        the status that was replaced."""
        replaced: list[int] = []

        async def lose(response: Response) -> Response:
            if request.method == "POST" and request.path.endswith(path_suffix) and not replaced:
                replaced.append(response.status_code)
                await trio.sleep(delay)
                return Response("Bad Gateway", 502)
            return response

        self.app.after_request_funcs[None].append(lose)
        return replaced

    def messages_in(self, conversation_id: int) -> list[Json]:
        """REST-shaped messages of a conversation, in id order."""
        return [self._message_rest(m) for m in self._messages_of(conversation_id)]

    def conversation_for(self, identifier: str) -> list[Json]:
        """REST-shaped conversations of the contact with this identifier, oldest first."""
        ids = {c["id"] for c in self.contacts.values() if c["identifier"] == identifier}
        return [
            self._conversation_rest(c)
            for c in self.conversations.values()
            if c["contact_id"] in ids
        ]

    def contact_by_identifier(self, identifier: str) -> Json | None:
        """The stored contact with exactly this identifier."""
        return next((c for c in self.contacts.values() if c["identifier"] == identifier), None)

    def age_csat(self, conversation_id: int, days: float) -> None:
        """Make the conversation's CSAT message ``days`` older."""
        message = self._csat_message(self.conversations[conversation_id])
        if message is None:
            raise KeyError(f"conversation {conversation_id} has no CSAT message")
        message["created_at"] -= days * 86400

    def sign(self, body: bytes, timestamp: int) -> str:
        """``X-Chatwoot-Signature`` for ``body``: ``sha256=HMAC(secret, "<ts>.<body>")``."""
        if not self.webhook_secret:
            raise ValueError("no webhook_secret configured")
        mac = hmac.new(
            self.webhook_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        )
        return "sha256=" + mac.hexdigest()

    def delivered_events(self, event: str | None = None) -> list[Json]:
        """Decoded bodies of the deliveries to the first URL, optionally of one event type."""
        first = self.webhook_urls[0] if self.webhook_urls else None
        bodies = [json.loads(d.body) for d in self.webhook_deliveries if d.url == first]
        return [b for b in bodies if event is None or b.get("event") == event]

    # ================================================================== agent-side actions

    async def agent_reply(
        self,
        conversation_id: int,
        content: str,
        *,
        private: bool = False,
        attachments: Sequence[tuple[str, str, bytes]] = (),
        deliver: bool = True,
    ) -> Json:
        """An agent answers (or writes a private note) in the dashboard."""
        with self._actions(deliver) as done:
            conversation = self.conversations[conversation_id]
            message = self._create_message(
                conversation,
                message_type=OUTGOING,
                content=content,
                private=private,
                sender=("User", self.agent["id"]),
                attachments=list(attachments),
            )
        await self._wait(done)
        return self._message_rest(message)

    async def set_status(self, conversation_id: int, status: str, *, deliver: bool = True) -> None:
        """An agent changes the conversation status (CSAT follows on resolve when enabled)."""
        with self._actions(deliver) as done:
            self._change_conversation(
                self.conversations[conversation_id], self.agent["name"], status=status
            )
        await self._wait(done)

    async def delete_message(self, conversation_id: int, message_id: int) -> None:
        """An agent deletes a message: soft delete plus ``message_updated``."""
        with self._actions(True) as done:
            message = self.messages[message_id]
            if message["conversation_id"] != conversation_id:
                raise KeyError(f"message {message_id} is not in conversation {conversation_id}")
            self._soft_delete(message)
        await self._wait(done)

    async def agent_typing(self, conversation_id: int, on: bool, *, private: bool = False) -> None:
        """An agent starts or stops typing (``is_private`` while writing a note)."""
        with self._actions(True) as done:
            self._typing(
                self.conversations[conversation_id], self._user_webhook(self.agent), on, private
            )
        await self._wait(done)

    @contextmanager
    def _actions(self, deliver: bool) -> Iterator[list[trio.Event]]:
        """Collect the webhooks emitted inside; drop them (``lost_webhooks``) if not ``deliver``."""
        done: list[trio.Event] = []
        self._capture, self._deliver = done, deliver
        try:
            yield done
        finally:
            self._capture, self._deliver = None, True

    async def _wait(self, done: list[trio.Event]) -> None:
        for event in done:
            await event.wait()

    # ================================================================== app and middleware

    def _build_app(self) -> QuartTrio:
        app = QuartTrio(__name__)
        app.config["MAX_CONTENT_LENGTH"] = 128 * 1024 * 1024
        app.before_request(self._before)
        app.after_request(self._after)
        a = "/api/v1/accounts/<int:account_id>"
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", "/health", self._health),
            ("GET", "/api", self._api_version),
            ("GET", "/api/v1/profile", self._profile),
            ("POST", f"{a}/contacts", self._create_contact),
            ("GET", f"{a}/contacts/search", self._search_contacts),
            ("GET", f"{a}/contacts/<int:contact_id>", self._show_contact),
            ("PUT", f"{a}/contacts/<int:contact_id>", self._update_contact),
            ("PATCH", f"{a}/contacts/<int:contact_id>", self._update_contact),
            ("POST", f"{a}/contacts/<int:contact_id>/contact_inboxes", self._create_contact_inbox),
            ("GET", f"{a}/contacts/<int:contact_id>/conversations", self._contact_conversations),
            ("GET", f"{a}/conversations", self._list_conversations),
            ("POST", f"{a}/conversations", self._create_conversation),
            ("GET", f"{a}/conversations/<int:cid>", self._show_conversation),
            ("POST", f"{a}/conversations/<int:cid>/toggle_status", self._toggle_status),
            ("POST", f"{a}/conversations/<int:cid>/toggle_typing_status", self._agent_typing_api),
            ("GET", f"{a}/conversations/<int:cid>/messages", self._list_messages),
            ("POST", f"{a}/conversations/<int:cid>/messages", self._post_message),
            ("PATCH", f"{a}/conversations/<int:cid>/messages/<int:mid>", self._message_status),
            ("PUT", f"{a}/conversations/<int:cid>/messages/<int:mid>", self._message_status),
            ("DELETE", f"{a}/conversations/<int:cid>/messages/<int:mid>", self._destroy_message),
            ("GET", f"{a}/inboxes/<int:iid>", self._show_inbox),
            (
                "POST",
                "/public/api/v1/inboxes/<ident>/contacts/<source_id>/conversations/<int:cid>"
                "/toggle_typing",
                self._contact_typing,
            ),
            ("GET", "/public/api/v1/csat_survey/<cuuid>", self._show_csat),
            ("PATCH", "/public/api/v1/csat_survey/<cuuid>", self._update_csat),
            ("PUT", "/public/api/v1/csat_survey/<cuuid>", self._update_csat),
            ("GET", "/rails/active_storage/blobs/redirect/<int:aid>/<name>", self._blob_redirect),
            ("GET", "/rails/active_storage/disk/<int:aid>/<name>", self._blob),
        ]
        for index, (method, rule, view) in enumerate(routes):
            app.add_url_rule(rule, f"r{index}", view, methods=[method])
        return app

    async def _before(self) -> Response | tuple[Any, int] | None:
        """Record, then apply latency, outage, injected failures, rate limit, auth, spec check."""
        form: dict[str, str] = {}
        files: list[RecordedFile] = []
        body: Any = None
        if request.mimetype == "multipart/form-data":
            form = {k: v for k, v in (await request.form).items()}
            for name, storage in (await request.files).items(multi=True):
                files.append(
                    RecordedFile(name, storage.filename or "", storage.mimetype, storage.read())
                )
        else:
            body = await request.get_json(silent=True)
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query={k: v for k, v in request.args.items()},
            json=body,
            form=form,
            files=files,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.requests.append(recorded)
        g.recorded = recorded
        if self.latency:
            await trio.sleep(self.latency)
        if self.down:
            return Response("Service Unavailable\n", 503, mimetype="text/plain")
        if self._globally_throttled(request.path):
            return Response("Retry later\n", 429, mimetype="text/plain")
        injected = self._injected_failure(request.method, request.path)
        if injected is not None:
            return injected
        account_match = re.match(r"^/api/v1/accounts/(\d+)/", request.path)
        if account_match and request.path.endswith("/contacts/search"):
            if self._rate_limited(int(account_match.group(1))):
                return Response("Retry later\n", 429, mimetype="text/plain")
        if request.path.startswith("/api/v1/"):
            if request.headers.get("api_access_token") != self.api_token:
                return {"error": "Invalid Access Token"}, 401
            if account_match and int(account_match.group(1)) != self.account_id:
                return {"error": "You are not authorized to do this action"}, 401
        self._check_spec(recorded)
        return None

    async def _after(self, response: Response) -> Response:
        recorded = g.get("recorded")
        if recorded is not None:
            recorded.status = response.status_code
        return response

    def _injected_failure(self, method: str, path: str) -> Response | None:
        for failure in self._failures:
            if failure.times > 0 and failure.method in (method, "*") and failure.path.search(path):
                failure.times -= 1
                if failure.times == 0:
                    self._failures.remove(failure)
                body = failure.body
                if body is None:
                    body = (
                        "Retry later\n"
                        if failure.status == 429
                        else {"error": _reason(failure.status)}
                    )
                if isinstance(body, str | bytes):
                    return Response(body, failure.status, mimetype="text/plain")
                return Response(json.dumps(body), failure.status, mimetype="application/json")
        return None

    def _globally_throttled(self, path: str) -> bool:
        """rack-attack's ``req/ip``: ``rack_attack_limit`` requests per fixed window (aligned
        to the epoch) from our one IP; ``/health`` is safelisted.  No Retry-After header."""
        if self.rack_attack_limit is None or path == "/health":
            return False
        now = self.clock()
        window = int(now // self.rack_attack_period)
        seen_window, count = self._ip_hits
        count = count + 1 if window == seen_window else 1
        self._ip_hits = (window, count)
        if count <= self.rack_attack_limit:
            return False
        self.throttled.append(now)
        return True

    def _rate_limited(self, account_id: int) -> bool:
        """rack-attack: 100 searches per fixed 60 s window per account."""
        window = int(self.clock() // 60)
        self._search_hits = {k: v for k, v in self._search_hits.items() if k[1] == window}
        key = (account_id, window)
        self._search_hits[key] = self._search_hits.get(key, 0) + 1
        return self._search_hits[key] > SEARCH_LIMIT_PER_MINUTE

    def _check_spec(self, recorded: RecordedRequest) -> None:
        path = recorded.path
        if not self.check_spec or not path.startswith(("/api/v1/", "/public/api/v1/")):
            return
        for method, pattern in SPEC_GAPS:
            if method in (recorded.method, "*") and pattern.match(path):
                return
        form: dict[str, Any] | None = None
        if recorded.form or recorded.files:
            form = _rails_form(recorded.form)
        self.violations += self._spec.check_request(
            recorded.method, path, query=recorded.query, json_body=recorded.json, form=form
        )

    def _params(self) -> Json:
        """Rails-style params: JSON body or decoded multipart fields, over the query string."""
        recorded: RecordedRequest = g.recorded
        params: Json = dict(recorded.query)
        if isinstance(recorded.json, dict):
            params.update(recorded.json)
        params.update(_rails_form(recorded.form))
        return params

    # ================================================================== ids, time, lookups

    def _next_id(self, kind: str, start: int) -> int:
        self._ids[kind] = self._ids.get(kind, start - 1) + 1
        return self._ids[kind]

    def _conversation_or_404(self, cid: int) -> Json | None:
        return self.conversations.get(cid)

    def _contact_inbox_of(self, conversation: Json) -> Json:
        return self.contact_inboxes[conversation["contact_inbox_id"]]

    def _csat_message(self, conversation: Json) -> Json | None:
        return next(
            (
                m
                for m in self._messages_of(conversation["id"])
                if m["content_type"] == "input_csat"
            ),
            None,
        )

    def _conversation_messages(self, conversation: Json) -> list[Json]:
        return list(self._messages_of(conversation["id"]))

    def _messages_of(self, conversation_id: int) -> list[Json]:
        """The conversation's messages in id order, from an index kept beside ``messages``.

        Message ids only grow, so appending keeps the order; if ``messages`` was changed
        directly (not through ``_create_message``), the index is rebuilt from it.
        """
        if self._indexed != len(self.messages):
            self._by_conversation = {}
            for message in sorted(self.messages.values(), key=lambda m: m["id"]):
                self._by_conversation.setdefault(message["conversation_id"], []).append(message)
            self._indexed = len(self.messages)
        return self._by_conversation.get(conversation_id, [])

    # ================================================================== presenters

    def _default_inbox(self) -> Json:
        return {
            "id": self.inbox_id,
            "avatar_url": "",
            "channel_id": 3,
            "name": "Discord",
            "channel_type": "Channel::Api",
            "greeting_enabled": False,
            "greeting_message": None,
            "working_hours_enabled": False,
            "enable_email_collect": True,
            "csat_survey_enabled": False,
            "csat_config": {"display_type": "emoji", "message": "", "survey_rules": {}},
            "enable_auto_assignment": True,
            "auto_assignment_config": {},
            "out_of_office_message": None,
            "working_hours": default_working_hours(),
            "timezone": "UTC",
            "callback_webhook_url": None,
            "allow_messages_after_resolved": True,
            "lock_to_single_conversation": False,
            "sender_name_type": "friendly",
            "business_name": None,
            "allowed_domains": None,
            "widget_color": None,
            "website_url": None,
            "hmac_mandatory": None,
            "welcome_title": None,
            "welcome_tagline": None,
            "web_widget_script": None,
            "website_token": None,
            "selected_feature_flags": None,
            "reply_time": None,
            "messaging_service_sid": None,
            "phone_number": None,
            "hmac_token": "hmac-" + uuid.uuid4().hex[:20],
            "secret": self.webhook_secret,
            "webhook_url": self.webhook_urls[0] if self.webhook_urls else "",
            "inbox_identifier": uuid.uuid4().hex[:24],
            "additional_attributes": {},
            "provider": None,
        }

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
        item = _Event(payload)
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
        file_type = _FILE_TYPES.get(mime, "audio" if mime.startswith("audio/") else "file")
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

    # ================================================================== webhook sender

    async def _send_webhooks(self, receive: trio.MemoryReceiveChannel[_Event]) -> None:
        async with (
            receive,
            httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=True) as client,
        ):
            async for item in receive:
                try:
                    await self._deliver_event(client, item.payload)
                finally:
                    item.done.set()
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()

    async def _deliver_event(self, client: httpx.AsyncClient, payload: Json) -> None:
        body = rails_json(payload)
        for index, url in enumerate(self.webhook_urls):
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Chatwoot-Delivery": str(uuid.uuid4()),
                # each delivery is its own Sidekiq job with its own connection
                "Connection": "close",
            }
            if self.webhook_secret:
                timestamp = int(self.clock())
                headers["X-Chatwoot-Timestamp"] = str(timestamp)
                headers["X-Chatwoot-Signature"] = self.sign(body, timestamp)
            status: int | None = None
            error: str | None = None
            try:
                response = await client.post(url, content=body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"{status} {_reason(status)}"
            except httpx.TimeoutException:
                error = "execution expired"
            except httpx.HTTPError as exc:
                error = f"Failed to open TCP connection ({type(exc).__name__})"
            self.webhook_deliveries.append(WebhookDelivery(url, headers, body, status))
            is_message_event = payload.get("event") in ("message_created", "message_updated")
            if error and index == 0 and is_message_event and payload["id"] in self.messages:
                self._set_message_status(self.messages[payload["id"]], "failed", error)

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
            private=_truthy(params.get("private")),
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
            message, str(params.get("status")), params.get("external_error"),
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

    # ================================================================== additions: agent retry

    async def agent_retry(self, conversation_id: int, message_id: int) -> None:
        """An agent presses Retry on a failed message (``POST .../messages/{id}/retry``).

        v4.15.1 sets ``sent``, wipes ``content_attributes`` (so ``external_error`` goes) and
        fires ``message_updated``; for an API inbox nothing else happens.
        """
        with self._actions(True) as done:
            message = self.messages[message_id]
            if message["conversation_id"] != conversation_id:
                raise KeyError(f"message {message_id} is not in conversation {conversation_id}")
            message.update(status="sent", content_attributes={}, updated_at=self.clock())
            self._emit(self._message_webhook(message, "message_updated"))
        await self._wait(done)


def _reason(status: int) -> str:
    """The standard reason phrase, as Net::HTTP reports it."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _truthy(value: Any) -> bool:
    """Rails boolean casting of a param."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "t", "yes", "on")
    return bool(value)


def _rails_form(form: dict[str, str]) -> Json:
    """Decode multipart text fields as MessageBuilder does (JSON content_attributes, booleans)."""
    out: Json = dict(form)
    if "private" in out:
        out["private"] = _truthy(out["private"])
    raw = out.get("content_attributes")
    if isinstance(raw, str):
        try:
            out["content_attributes"] = json.loads(raw) if raw else {}
        except ValueError:
            out["content_attributes"] = {}
    return out


__all__ = [
    "FakeChatwoot",
    "RecordedFile",
    "RecordedRequest",
    "WebhookDelivery",
    "default_working_hours",
    "iso",
    "rails_json",
]
