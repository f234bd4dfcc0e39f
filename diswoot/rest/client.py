"""DiscordRest: thin Discord REST v10 methods over an injected ``httpx.AsyncClient``.

Every request passes the rate limits of discord-api.md §5.2 first (:mod:`diswoot.rest.gate`),
then is sent and retried here (429s, 5xx, network errors).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from diswoot import __version__
from diswoot.http_pool import send, upstream_headers
from diswoot.rest.errors import (
    DiscordHTTPError,
    DiscordRateLimited,
    DiscordTokenRejected,
    DiscordUnavailable,
    RequestWithdrawn,
)
from diswoot.rest.gate import RateLimitGate, RestStats
from diswoot.rest.ratelimit import Route

USER_AGENT = f"DiscordBot (https://github.com/diswoot/diswoot, {__version__})"
BACKOFF_BASE = 0.5
BACKOFF_CAP = 16.0
TOKEN_ROUTES = ("/webhooks/{webhook_id}/{webhook_token}", "/interactions/")
"""Routes an interaction's token authenticates: their 401 says nothing about the bot token."""


@dataclass(frozen=True)
class UploadFile:
    """A file for a multipart message send."""

    filename: str
    content_type: str
    data: bytes
    description: str | None = None
    spoiler: bool = False


def _error_from(route: Route, response: httpx.Response) -> DiscordHTTPError:
    """The error for a failed response: a 401 on a bot-token route is the token's
    (:class:`DiscordTokenRejected`), anything else the request's."""
    rejected = response.status_code == 401 and not route.template.startswith(TOKEN_ROUTES)
    error = DiscordTokenRejected if rejected else DiscordHTTPError
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("code")
        return error(
            response.status_code,
            code if isinstance(code, int) else None,
            str(data.get("message", response.reason_phrase)),
            route.key,
            data.get("errors") if isinstance(data.get("errors"), dict) else None,
        )
    text = response.text[:200] or response.reason_phrase
    return error(response.status_code, None, text, route.key)


def _backoff(attempt: int) -> float:
    """Capped exponential backoff with jitter (attempt 0 -> ~0.5 s)."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt)
    return delay * random.uniform(0.5, 1.0)


class DiscordRest:
    """Discord REST v10 client; safe to share between tasks."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        token: str,
        user_agent_extra: str = "",
        max_retries: int = 5,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        agent = f"{USER_AGENT} {user_agent_extra}".strip()
        self._headers = upstream_headers(
            http, {"Authorization": f"Bot {token}", "User-Agent": agent}
        )
        self._max_retries = max_retries
        self.stats = RestStats()
        self._gate = RateLimitGate(self.stats)
        self._dm_channels: dict[str, str] = {}
        self.token_rejected = trio.Event()
        """Set by a 401 on a route the bot token authenticates (the daemon then exits 78)."""

    async def _request(
        self,
        route: Route,
        *,
        json_body: Any = None,
        files: Sequence[UploadFile] = (),
        params: Mapping[str, str] | None = None,
        retry_safe: bool | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> Any:
        """Send with rate limiting and retries; return the decoded JSON (None for 204).

        ``still_wanted`` is asked right before each attempt is sent (after any rate-limit
        wait): False raises :class:`RequestWithdrawn`, nothing sent."""
        if retry_safe is None:
            retry_safe = route.method in ("GET", "HEAD", "PUT", "DELETE")
        request_kwargs = self._encode(json_body, files)
        failures = limited = 0
        while True:
            async with self._gate.slot(route) as slot:
                if still_wanted is not None and not still_wanted():
                    raise RequestWithdrawn(route.key)
                self.stats.requests += 1
                self.stats.by_route[route.key] += 1
                try:
                    slot.response = await send(
                        self._http,
                        route.method,
                        self._base + route.path,
                        params=params,
                        headers=self._headers,
                        timeout=self._http.timeout,
                        **request_kwargs,
                    )
                except httpx.TransportError as exc:
                    # A connect error means nothing was sent, so any request may be retried.
                    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                    if not (retry_safe or unsent) or failures >= self._max_retries:
                        raise DiscordUnavailable(f"network error: {exc!r}", route.key) from exc
            response = slot.response
            if response is None:
                await trio.sleep(_backoff(failures))
                failures += 1
                continue
            if response.status_code == 429:
                too_many = slot.too_many
                assert too_many is not None
                if too_many.retry_after is None:
                    raise DiscordRateLimited(
                        "429 without a Discord body (Cloudflare ban?)",
                        route.key,
                        _header_seconds(response.headers.get("retry-after")),
                    )
                limited += 1
                if limited > self._max_retries:
                    raise DiscordRateLimited(
                        "still rate limited after retries", route.key, too_many.retry_after
                    )
                continue  # the gate waits out retry_after before the next attempt
            if response.status_code >= 500:
                if not retry_safe or failures >= self._max_retries:
                    raise DiscordUnavailable(f"HTTP {response.status_code}", route.key)
                await trio.sleep(_backoff(failures))
                failures += 1
                continue
            if not response.is_success:
                error = _error_from(route, response)
                if isinstance(error, DiscordTokenRejected):
                    self.token_rejected.set()
                raise error
            if response.status_code == 204 or not response.content:
                return None
            return response.json()

    @staticmethod
    def _encode(json_body: Any, files: Sequence[UploadFile]) -> dict[str, Any]:
        if not files:
            return {} if json_body is None else {"json": json_body}
        payload = dict(json_body or {})
        payload["attachments"] = [
            {
                "id": str(index),
                "filename": f.filename,
                **({"description": f.description} if f.description is not None else {}),
                **({"is_spoiler": True} if f.spoiler else {}),
            }
            for index, f in enumerate(files)
        ]
        parts: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
            ("payload_json", (None, json.dumps(payload), "application/json"))
        ]
        parts += [
            (f"files[{index}]", (f.filename, f.data, f.content_type))
            for index, f in enumerate(files)
        ]
        return {"files": parts}

    # -- endpoints ---------------------------------------------------------------------------

    async def get_gateway_bot(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(Route.of("GET", "/gateway/bot"))
        return result

    async def get_current_user(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(Route.of("GET", "/users/@me"))
        return result

    async def get_current_application(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(Route.of("GET", "/applications/@me"))
        return result

    async def get_user(self, user_id: str) -> dict[str, Any]:
        route = Route.of("GET", "/users/{user_id}", user_id=user_id)
        result: dict[str, Any] = await self._request(route)
        return result

    def remember_dm_channel(self, user_id: str, channel_id: str) -> None:
        """Seed the DM cache from a DM the user sent (saves a Create DM call later)."""
        self._dm_channels[user_id] = channel_id

    async def create_dm(self, user_id: str) -> str:
        """The DM channel id with ``user_id`` (Create DM is idempotent; cached in memory)."""
        if user_id not in self._dm_channels:
            channel = await self._request(
                Route.of("POST", "/users/@me/channels"),
                json_body={"recipient_id": user_id},
                retry_safe=True,
            )
            self._dm_channels[user_id] = str(channel["id"])
        return self._dm_channels[user_id]

    async def send_message(
        self,
        channel_id: str,
        *,
        content: str | None = None,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        files: Sequence[UploadFile] = (),
        nonce: str | None = None,
        allowed_mentions: dict[str, Any] | None = None,
        message_reference: dict[str, Any] | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Create a message; with ``nonce`` the send is idempotent and retried on 5xx;
        ``still_wanted`` as for :meth:`_request`."""
        body: dict[str, Any] = {
            "allowed_mentions": allowed_mentions if allowed_mentions is not None else {"parse": []}
        }
        optional = {
            "content": content,
            "embeds": embeds,
            "components": components,
            "message_reference": message_reference,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if nonce is not None:
            body["nonce"] = nonce
            body["enforce_nonce"] = True
        route = Route.of("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
        result: dict[str, Any] = await self._request(
            route,
            json_body=body,
            files=files,
            retry_safe=nonce is not None,
            still_wanted=still_wanted,
        )
        return result

    async def edit_message(self, channel_id: str, message_id: str, **fields: Any) -> dict[str, Any]:
        route = Route.of(
            "PATCH",
            "/channels/{channel_id}/messages/{message_id}",
            channel_id=channel_id,
            message_id=message_id,
        )
        result: dict[str, Any] = await self._request(route, json_body=fields)
        return result

    async def delete_message(self, channel_id: str, message_id: str) -> None:
        route = Route.of(
            "DELETE",
            "/channels/{channel_id}/messages/{message_id}",
            channel_id=channel_id,
            message_id=message_id,
        )
        await self._request(route)

    async def add_reaction(self, channel_id: str, message_id: str, emoji: str) -> None:
        """React as the bot; ``emoji`` is the literal unicode emoji or ``name:id``."""
        route = Route.of(
            "PUT",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            channel_id=channel_id,
            message_id=message_id,
            emoji=emoji,
        )
        await self._request(route)

    async def trigger_typing(self, channel_id: str) -> None:
        route = Route.of("POST", "/channels/{channel_id}/typing", channel_id=channel_id)
        await self._request(route, retry_safe=True)

    async def list_messages(
        self, channel_id: str, *, after: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """One page, newest first as Discord returns it (also with ``after``)."""
        params = {"limit": str(limit)}
        if after is not None:
            params["after"] = after
        route = Route.of("GET", "/channels/{channel_id}/messages", channel_id=channel_id)
        result: list[dict[str, Any]] = await self._request(route, params=params)
        return result

    async def create_interaction_response(
        self, interaction_id: str, token: str, payload: dict[str, Any]
    ) -> None:
        route = Route.of(
            "POST",
            "/interactions/{interaction_id}/{interaction_token}/callback",
            interaction_id=interaction_id,
            interaction_token=token,
        )
        await self._request(route, json_body=payload)

    async def edit_original_response(
        self, application_id: str, token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        route = Route.of(
            "PATCH",
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
            webhook_id=application_id,
            webhook_token=token,
        )
        result: dict[str, Any] = await self._request(route, json_body=payload)
        return result

    async def create_followup(
        self, application_id: str, token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        route = Route.of(
            "POST",
            "/webhooks/{webhook_id}/{webhook_token}",
            webhook_id=application_id,
            webhook_token=token,
        )
        result: dict[str, Any] = await self._request(route, json_body=payload)
        return result

    async def bulk_overwrite_global_commands(
        self, application_id: str, commands: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        route = Route.of(
            "PUT", "/applications/{application_id}/commands", application_id=application_id
        )
        result: list[dict[str, Any]] = await self._request(route, json_body=commands)
        return result


def _header_seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
