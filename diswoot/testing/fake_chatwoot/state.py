"""The fake Chatwoot's data: one account, one API inbox, and what it holds (dicts by id)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import trio

from diswoot.testing.fake_chatwoot.records import (
    InjectedFailure,
    Json,
    QueuedEvent,
    RecordedRequest,
    WebhookDelivery,
    default_working_hours,
)
from diswoot.testing.openapi import SpecValidator


class ChatwootState:
    """The account's records and the fake's bookkeeping; lookups by id."""

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
        self._failures: list[InjectedFailure] = []
        self._search_hits: dict[tuple[int, int], int] = {}
        self._ids: dict[str, int] = {}
        self._spec = SpecValidator.load("chatwoot")
        self._events_tx: trio.MemorySendChannel[QueuedEvent] | None = None
        self._pending = 0
        self._idle = trio.Event()
        self._idle.set()
        self._capture: list[trio.Event] | None = None
        self._deliver = True
        self._stop = trio.Event()

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
            (m for m in self._messages_of(conversation["id"]) if m["content_type"] == "input_csat"),
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
