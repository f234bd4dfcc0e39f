"""ChatwootClient: thin async methods over an injected ``httpx.AsyncClient``.

Every method maps to one documented endpoint (``chatwoot-api.md`` §3-§6) and returns the
unwrapped JSON, or raises :class:`ChatwootUnavailable` (retry later) or a :class:`ChatwootError`
subclass (4xx).  No method retries: the caller's outbox owns retry policy.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import trio

from diswoot.chatwoot.errors import (
    INVALID_TOKEN_ERROR,
    ChatwootCsatLocked,
    ChatwootError,
    ChatwootNotFound,
    ChatwootTokenRejected,
    ChatwootUnavailable,
    ChatwootUnprocessable,
)
from diswoot.chatwoot.models import Attachment, Contact, InboxConfig
from diswoot.chatwoot.multipart import form_value, multipart_body
from diswoot.chatwoot.throttle import FixedWindowThrottle
from diswoot.http_pool import send, upstream_headers

SEARCH_PAGE_SIZE = 15
"""Chatwoot's ``/contacts/search`` page size (used when an old server omits ``has_more``)."""


class ChatwootClient:
    """One Chatwoot account and API inbox, reached through ``http``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        account_id: int,
        inbox_id: int,
        api_token: str,
        timeout: float = 15.0,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._account = f"/api/v1/accounts/{account_id}"
        self.account_id = account_id
        self.inbox_id = inbox_id
        self._token = api_token
        self._timeout = httpx.Timeout(timeout)
        self._headers: dict[bool, httpx.Headers] = {}  # by public
        self.calls: Counter[str] = Counter()
        self.throttle = FixedWindowThrottle()
        self.token_rejected = trio.Event()
        """Set by a 401 "Invalid Access Token" (the daemon then exits 78)."""

    # ------------------------------------------------------------------ contacts

    async def create_contact(
        self,
        *,
        name: str,
        identifier: str,
        email: str | None = None,
        avatar_url: str | None = None,
        custom_attributes: dict[str, Any] | None = None,
        with_inbox: bool = True,
    ) -> Contact:
        """POST /contacts; with ``with_inbox`` Chatwoot also creates our contact_inbox."""
        body: dict[str, Any] = {"name": name, "identifier": identifier}
        if email is not None:
            body["email"] = email
        if avatar_url is not None:
            body["avatar_url"] = avatar_url
        if custom_attributes:
            body["custom_attributes"] = custom_attributes
        if with_inbox:
            body["inbox_id"] = self.inbox_id
        data = await self._call("POST", "/contacts", json_body=body)
        payload = _field(data, "payload")
        contact = _field(payload, "contact")
        contact_inbox = payload.get("contact_inbox") or {}
        source_id = contact_inbox.get("source_id") if isinstance(contact_inbox, dict) else None
        return Contact(id=int(contact["id"]), source_id=source_id, raw=contact)

    async def find_contact_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        """The contact whose identifier is exactly ``identifier`` (search is a substring match)."""
        page = 1
        while True:
            data = await self._call(
                "GET", "/contacts/search", params={"q": identifier, "page": str(page)}
            )
            found: list[dict[str, Any]] = _field(data, "payload")
            for contact in found:
                if contact.get("identifier") == identifier:
                    return contact
            meta = data.get("meta") or {}
            more = meta.get("has_more", len(found) >= SEARCH_PAGE_SIZE)
            if not more or not found:
                return None
            page += 1

    async def update_contact(self, contact_id: int, **fields: Any) -> dict[str, Any]:
        """PUT /contacts/{id}; custom/additional attributes are merged by Chatwoot."""
        data = await self._call("PUT", "/contacts/{id}", contact_id, json_body=fields)
        result: dict[str, Any] = _field(data, "payload")
        return result

    async def create_contact_inbox(self, contact_id: int, source_id: str | None = None) -> str:
        """POST /contacts/{id}/contact_inboxes for our inbox; returns the source_id."""
        body: dict[str, Any] = {"inbox_id": self.inbox_id}
        if source_id is not None:
            body["source_id"] = source_id
        data = await self._call(
            "POST", "/contacts/{id}/contact_inboxes", contact_id, json_body=body
        )
        return str(_field(data, "source_id"))

    async def list_contact_conversations(self, contact_id: int) -> list[dict[str, Any]]:
        """The contact's conversations in our inbox, most recently active first (max 20)."""
        data = await self._call("GET", "/contacts/{id}/conversations", contact_id)
        return [c for c in _field(data, "payload") if c.get("inbox_id") == self.inbox_id]

    # ------------------------------------------------------------------ conversations

    async def create_conversation(
        self, *, contact_id: int, source_id: str, status: str = "open"
    ) -> dict[str, Any]:
        """POST /conversations (returns the last one instead when the inbox is locked)."""
        body = {
            "inbox_id": self.inbox_id,
            "contact_id": contact_id,
            "source_id": source_id,
            "status": status,
        }
        return _object(await self._call("POST", "/conversations", json_body=body))

    async def get_conversation(self, conversation_id: int) -> dict[str, Any]:
        """GET /conversations/{display_id}: has ``uuid``, ``status``, ``last_activity_at``."""
        return _object(await self._call("GET", "/conversations/{id}", conversation_id))

    async def toggle_status(
        self, conversation_id: int, status: str, snoozed_until: int | None = None
    ) -> str:
        """POST /conversations/{id}/toggle_status; returns the current status."""
        body: dict[str, Any] = {"status": status}
        if snoozed_until is not None:
            body["snoozed_until"] = snoozed_until
        data = await self._call(
            "POST", "/conversations/{id}/toggle_status", conversation_id, json_body=body
        )
        return str(_field(_field(data, "payload"), "current_status"))

    async def list_conversations(
        self, *, updated_within: int | None = None, status: str = "all", page: int = 1
    ) -> list[dict[str, Any]]:
        """GET /conversations of our inbox; ``updated_within`` (seconds) disables paging."""
        params = {"inbox_id": str(self.inbox_id), "status": status, "page": str(page)}
        if updated_within is not None:
            params["updated_within"] = str(updated_within)
        data = await self._call("GET", "/conversations", params=params)
        result: list[dict[str, Any]] = _field(_field(data, "data"), "payload")
        return result

    # ------------------------------------------------------------------ messages

    async def create_message(
        self,
        conversation_id: int,
        *,
        content: str | None,
        message_type: str = "incoming",
        private: bool = False,
        source_id: str | None = None,
        content_attributes: dict[str, Any] | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> dict[str, Any]:
        """POST /conversations/{id}/messages; multipart with ``attachments[]`` when given."""
        fields: dict[str, Any] = {"message_type": message_type, "private": private}
        if content is not None:
            fields["content"] = content
        if source_id is not None:
            fields["source_id"] = source_id
        if content_attributes:
            fields["content_attributes"] = content_attributes
        route = "/conversations/{id}/messages"
        if not attachments:
            data = await self._call("POST", route, conversation_id, json_body=fields)
        else:
            form = {k: form_value(v) for k, v in fields.items()}
            content_type, body = multipart_body(form, attachments)
            data = await self._call(
                "POST", route, conversation_id, content=body, content_type=content_type
            )
        return _object(data)

    async def update_message_status(
        self,
        conversation_id: int,
        message_id: int,
        status: str,
        external_error: str | None = None,
    ) -> dict[str, Any]:
        """PATCH a message's delivery status (API inboxes only, since 4.2.0)."""
        body: dict[str, Any] = {"status": status}
        if external_error is not None:
            body["external_error"] = external_error
        data = await self._call(
            "PATCH",
            "/conversations/{id}/messages/{message_id}",
            conversation_id,
            message_id,
            json_body=body,
        )
        return _object(data)

    async def list_messages(
        self, conversation_id: int, *, after: int | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        """GET messages: latest 20, 20 before ``before``, up to 100 after ``after``."""
        params: dict[str, str] = {}
        if after is not None:
            params["after"] = str(after)
        if before is not None:
            params["before"] = str(before)
        data = await self._call(
            "GET", "/conversations/{id}/messages", conversation_id, params=params
        )
        result: list[dict[str, Any]] = _field(data, "payload")
        return result

    # ------------------------------------------------------------------ inbox, profile, health

    async def get_inbox(self) -> InboxConfig:
        """GET /inboxes/{inbox_id} parsed into :class:`InboxConfig`."""
        data = await self._call("GET", "/inboxes/{id}", self.inbox_id)
        try:
            return InboxConfig.from_api(data)
        except ValueError as exc:
            raise ChatwootUnavailable(f"Chatwoot inbox JSON is malformed: {exc}") from exc

    async def get_profile(self) -> dict[str, Any]:
        """GET /api/v1/profile: the token's user (401 when the token is bad)."""
        return _object(await self._call("GET", "/api/v1/profile", absolute=True))

    async def probe(self) -> bool:
        """Is Chatwoot up? GET /health (4.11+), falling back to GET /api. Never raises."""
        for route in ("/health", "/api"):
            self.calls[f"GET {route}"] += 1
            try:
                response = await self._http.get(self._base + route, timeout=self._timeout)
            except Exception:  # a probe answers, it never raises (Cancelled is not an Exception)
                return False
            if response.status_code == 200:
                return True
        return False

    # ------------------------------------------------------------------ public (token-less) API

    async def toggle_typing_as_contact(
        self, inbox_identifier: str, source_id: str, conversation_id: int, on: bool
    ) -> None:
        """Show the contact as typing to agents (public client API, no token)."""
        state = "on" if on else "off"
        await self._call(
            "POST",
            "/public/api/v1/inboxes/{inbox_identifier}/contacts/{source_id}"
            "/conversations/{id}/toggle_typing",
            inbox_identifier,
            source_id,
            conversation_id,
            # The spec lists typing_status as a (required) query parameter and a body field;
            # Rails merges both, so sending it in each satisfies either reading.
            params={"typing_status": state},
            json_body={"typing_status": state},
            absolute=True,
            public=True,
        )

    async def get_csat(self, conversation_uuid: str) -> dict[str, Any]:
        """GET /public/api/v1/csat_survey/{uuid} (404 when there is no survey message)."""
        return _object(
            await self._call(
                "GET",
                "/public/api/v1/csat_survey/{uuid}",
                conversation_uuid,
                absolute=True,
                public=True,
            )
        )

    async def submit_csat(
        self, conversation_uuid: str, rating: int, feedback: str | None
    ) -> dict[str, Any]:
        """PATCH the CSAT response; raises ChatwootCsatLocked after 14 days."""
        response: dict[str, Any] = {"rating": rating}
        if feedback:
            response["feedback_message"] = feedback
        body = {"message": {"submitted_values": {"csat_survey_response": response}}}
        return _object(
            await self._call(
                "PATCH",
                "/public/api/v1/csat_survey/{uuid}",
                conversation_uuid,
                json_body=body,
                absolute=True,
                public=True,
            )
        )

    # ------------------------------------------------------------------ plumbing

    def _headers_for(self, public: bool, content_type: str | None) -> httpx.Headers:
        """A request's headers: JSON answers, the token unless ``public``, the body's type.
        The two sets without a body type are built once; a multipart type names its own
        boundary, so it is built each time."""
        if content_type is None:
            cached = self._headers.get(public)
            if cached is None:
                cached = self._headers[public] = self._build_headers(public, {})
            return cached
        return self._build_headers(public, {"Content-Type": content_type})

    def _build_headers(self, public: bool, extra: dict[str, str]) -> httpx.Headers:
        extra["Accept"] = "application/json"
        if not public:
            extra["api_access_token"] = self._token
        return upstream_headers(self._http, extra)

    async def _call(
        self,
        method: str,
        route: str,
        *path_args: object,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: AsyncIterator[bytes] | bytes | None = None,
        content_type: str | None = None,
        absolute: bool = False,
        public: bool = False,
    ) -> Any:
        """Send one request and decode a 2xx answer; map everything else to our exceptions."""
        key = f"{method} {route}"
        self.calls[key] += 1
        url = self._base + ("" if absolute else self._account) + _fill(route, path_args)
        headers = self._headers_for(public, content_type)
        while (wait := self.throttle.delay()) > 0:  # noqa: ASYNC110 - a time, not an event
            await trio.sleep(wait)
        try:
            response = await send(
                self._http,
                method,
                url,
                params=params,
                json=json_body,
                content=content,
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise ChatwootUnavailable(f"Chatwoot {key} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ChatwootUnavailable(
                f"Chatwoot {key} failed: network error ({type(exc).__name__}: {exc})"
            ) from exc
        body = _decode(response)
        status = response.status_code
        if status < 500 and status != 429:  # counted by rack-attack, and not refused by it
            self.throttle.accepted()
        if 200 <= status < 300:
            return body
        if status == 429:
            # the search endpoint has a throttle of its own (100/min per account): only a
            # 429 elsewhere means the global per-IP limit is used up
            search = route == "/contacts/search"
            wait = self.throttle.rate_limited(response.headers.get("date"), block=not search)
            raise ChatwootUnavailable(
                f"Chatwoot {key} was rate-limited (429); sending again in {wait:.0f} s",
                status=status,
                retry_after=wait,
            )
        if status >= 500 or status < 400:
            raise ChatwootUnavailable(
                f"Chatwoot {key} answered {status} (server error); retry later", status=status
            )
        error = self._client_error(key, status, body, public=public)
        if isinstance(error, ChatwootTokenRejected):
            self.token_rejected.set()
        raise error

    def _client_error(self, key: str, status: int, body: Any, *, public: bool) -> ChatwootError:
        """The exception (with an operator hint) for a 4xx answer."""
        if status == 404:
            what = "the CSAT survey" if public else "the record"
            return ChatwootNotFound(
                key,
                status,
                body,
                f"not found: {what} does not exist (check CHATWOOT_ACCOUNT_ID="
                f"{self.account_id} and CHATWOOT_INBOX_ID={self.inbox_id})",
            )
        if status == 422:
            text = json.dumps(body) if not isinstance(body, str) else body
            if public and "14 days" in text:
                return ChatwootCsatLocked(
                    key, status, body, "the CSAT survey is older than 14 days and is locked"
                )
            return ChatwootUnprocessable(key, status, body, "Chatwoot rejected the data")
        if status == 401 and not public and _error_text(body) == INVALID_TOKEN_ERROR:
            return ChatwootTokenRejected(
                key,
                status,
                body,
                "CHATWOOT_API_TOKEN is not a valid access token (mistyped, revoked or "
                "regenerated; use the user's current Profile > Access Token)",
            )
        if status == 401:
            hint = (
                f"CHATWOOT_API_TOKEN was rejected or lacks access to inbox {self.inbox_id} "
                f"(use an agent/admin user token that is a member of the inbox)"
            )
        elif status == 403:
            hint = (
                f"forbidden: inbox {self.inbox_id} must be an API inbox and the token a user "
                f"(not agent-bot) token"
            )
        else:
            hint = "the request was rejected; this is a bug in diswoot or a bad setting"
        return ChatwootError(key, status, body, hint)


def _error_text(body: Any) -> Any:
    """The ``error`` field of a JSON error body (None for any other shape)."""
    return body.get("error") if isinstance(body, dict) else None


def _fill(route: str, args: Sequence[object]) -> str:
    """Substitute ``{placeholders}`` in order, percent-encoding each value."""
    out = route
    for arg in args:
        start = out.index("{")
        end = out.index("}", start)
        out = out[:start] + quote(str(arg), safe="") + out[end + 1 :]
    return out


def _decode(response: httpx.Response) -> Any:
    """JSON when the body parses as JSON, else the text (or ``None`` when empty)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _field(data: Any, name: str) -> Any:
    """``data[name]``; a missing key means Chatwoot answered an unexpected shape."""
    if not isinstance(data, dict) or name not in data:
        raise ChatwootUnavailable(f"unexpected Chatwoot response: no {name!r} in {str(data)[:200]}")
    return data[name]


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ChatwootUnavailable(f"unexpected Chatwoot response: {str(data)[:200]}")
    return data


__all__ = [
    "Attachment",
    "ChatwootClient",
    "ChatwootCsatLocked",
    "ChatwootError",
    "ChatwootNotFound",
    "ChatwootTokenRejected",
    "ChatwootUnavailable",
    "ChatwootUnprocessable",
    "Contact",
    "InboxConfig",
]
