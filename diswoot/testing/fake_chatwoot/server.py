"""The fake Chatwoot's server: its app and middleware, webhook sender and test controls.

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
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property, partial
from typing import Any

import httpx
import hypercorn.trio
import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from diswoot.testing.fake_chatwoot.records import (
    OUTGOING,
    SEARCH_LIMIT_PER_MINUTE,
    SPEC_GAPS,
    WEBHOOK_TIMEOUT,
    InjectedFailure,
    Json,
    QueuedEvent,
    RecordedFile,
    RecordedRequest,
    WebhookDelivery,
    rails_form,
    rails_json,
    reason_phrase,
)
from diswoot.testing.fake_chatwoot.routes import ChatwootRoutes
from diswoot.testing.loopback import loopback_config


class FakeChatwoot(ChatwootRoutes):
    """One Chatwoot account with one API inbox; see the module docstring."""

    @cached_property
    def app(self) -> QuartTrio:
        """The Quart app (routes and middleware), built on first use."""
        return self._build_app()

    # ================================================================== lifecycle

    async def serve(self, nursery: trio.Nursery) -> None:
        """Bind 127.0.0.1:0, start the webhook sender; sets :attr:`base_url`."""
        config = loopback_config()
        binds = await nursery.start(
            partial(hypercorn.trio.serve, self.app, config, shutdown_trigger=self._stop.wait)
        )
        self.base_url = binds[0]
        # Unbounded like Chatwoot's Sidekiq queue: request handlers never wait for delivery.
        send, receive = trio.open_memory_channel[QueuedEvent](math.inf)
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
        failure = InjectedFailure(method.upper(), re.compile(path_regex), status, times, body)
        self._failures.append(failure)

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
                        else {"error": reason_phrase(failure.status)}
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
            form = rails_form(recorded.form)
        self.violations += self._spec.check_request(
            recorded.method, path, query=recorded.query, json_body=recorded.json, form=form
        )

    # ================================================================== webhook sender

    async def _send_webhooks(self, receive: trio.MemoryReceiveChannel[QueuedEvent]) -> None:
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

    async def deliver_late(self, payloads: Sequence[Json]) -> None:
        """Send webhooks that were lost (``lost_webhooks``) now, in the order given: Sidekiq
        runs them in no particular order (chatwoot-api.md, "No ordering guarantee")."""
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
            for payload in payloads:
                await self._deliver_event(client, payload)

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
                    error = f"{status} {reason_phrase(status)}"
            except httpx.TimeoutException:
                error = "execution expired"
            except httpx.HTTPError as exc:
                error = f"Failed to open TCP connection ({type(exc).__name__})"
            self.webhook_deliveries.append(WebhookDelivery(url, headers, body, status))
            is_message_event = payload.get("event") in ("message_created", "message_updated")
            if error and index == 0 and is_message_event and payload["id"] in self.messages:
                self._set_message_status(self.messages[payload["id"]], "failed", error)
