"""DiscordRest: thin Discord REST v10 methods over an injected ``httpx.AsyncClient``.

Rate limiting (discord-api.md §5.2): each request first reserves a slot in its bucket (FIFO per
bucket through a ``trio.Lock``; a request whose bucket state is unknown goes alone and holds the
bucket until its response), then a slot in the proactive global window (50/s, held from the
send for a second plus a margin learned from the round trips; skipped by interaction callbacks
and webhook-token routes). An answer lowers a bucket's known state, never raises it within a
window, unless it is a probe's or the request was sent after that window ended (see
:attr:`_Ticket.describes_current_window`). All waits use trio's clock.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from diswoot import __version__
from diswoot.rest.errors import DiscordHTTPError, DiscordRateLimited, DiscordUnavailable
from diswoot.rest.ratelimit import (
    BucketMap,
    BucketState,
    Decision,
    GlobalSlot,
    GlobalWindow,
    RateLimitHeaders,
    Route,
    TooManyRequests,
)

USER_AGENT = f"DiscordBot (https://github.com/diswoot/diswoot, {__version__})"
BACKOFF_BASE = 0.5
BACKOFF_CAP = 16.0
_PRUNE_AT = 512


@dataclass(frozen=True)
class UploadFile:
    """A file for a multipart message send."""

    filename: str
    content_type: str
    data: bytes
    description: str | None = None
    spoiler: bool = False


@dataclass
class RestStats:
    """Counters for observability and tests."""

    requests: int = 0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    responses_429: int = 0
    by_route: Counter[str] = field(default_factory=Counter)


@dataclass
class _Ticket:
    key: str
    bucket: BucketState
    probe: bool
    lock: trio.Lock | None  # held until the response when probing
    sent_at: float = -math.inf  # until sent: its answer (none) describes nothing

    @property
    def describes_current_window(self) -> bool:
        """Its answer tells the bucket's state now: a probe's does, and so does that of a
        request sent after the window the bucket knows of had ended (reserved before, it then
        waited for a global slot): it reached Discord in a later window, and no answer to an
        earlier-sent request has moved the bucket on since."""
        return self.probe or self.sent_at >= self.bucket.reset_at


class _Gate:
    """Trio side of the rate limiter: per-bucket FIFO locks around the pure bookkeeping."""

    def __init__(self, stats: RestStats) -> None:
        self._stats = stats
        self._map = BucketMap()
        self._buckets: dict[str, BucketState] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._global = GlobalWindow()
        self._global_lock = trio.Lock()
        self._slot_freed = trio.Event()  # set when an answer frees a slot before the wait ends
        self._global_wait_until = -math.inf

    async def _wait(self, seconds: float) -> None:
        self._stats.rate_limit_waits += 1
        self._stats.rate_limit_wait_seconds += seconds
        await trio.sleep(seconds)

    def _bucket(self, key: str) -> tuple[BucketState, trio.Lock]:
        if key not in self._buckets:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune()
            self._buckets[key] = BucketState()
            self._locks[key] = trio.Lock()
        return self._buckets[key], self._locks[key]

    def _prune(self) -> None:
        now = trio.current_time()
        for key in [k for k, b in self._buckets.items() if b.idle(now)]:
            lock = self._locks[key]
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                del self._buckets[key], self._locks[key]

    async def _reserve(self, route: Route) -> _Ticket:
        while True:
            key = self._map.key_for(route)
            bucket, lock = self._bucket(key)
            await lock.acquire()
            try:
                while self._map.key_for(route) == key:
                    decision, delay = bucket.decide(trio.current_time())
                    if decision is not Decision.WAIT:
                        break
                    await self._wait(delay)
                else:
                    lock.release()  # the bucket hash was discovered meanwhile: requeue
                    continue
                bucket.reserve(decision)
            except BaseException:
                lock.release()
                raise
            if decision is Decision.PROBE:
                return _Ticket(key, bucket, True, lock)
            lock.release()
            return _Ticket(key, bucket, False, None)

    async def _pass_global(self) -> GlobalSlot:
        """Wait for a global slot and take it."""
        async with self._global_lock:
            while (delay := self._global.delay(now := trio.current_time())) > 0:
                self._stats.rate_limit_waits += 1
                self._slot_freed = trio.Event()
                self._global_wait_until = now + delay
                with trio.move_on_at(self._global_wait_until):  # no deadline while all in flight
                    await self._slot_freed.wait()
                self._global_wait_until = -math.inf
                self._stats.rate_limit_wait_seconds += trio.current_time() - now
            return self._global.start(trio.current_time())

    def _finish_global(self, slot: GlobalSlot, *, answered: bool) -> None:
        """``slot``'s request is over: wake the waiter if that frees a slot before its wait ends."""
        if self._global.finish(slot, trio.current_time(), answered=answered) < (
            self._global_wait_until
        ):
            self._slot_freed.set()

    @asynccontextmanager
    async def slot(self, route: Route) -> AsyncIterator[_Slot]:
        """Wait until ``route`` may be sent; the body sends it and reports via ``observe``."""
        ticket = await self._reserve(route)
        slot = _Slot()
        global_slot: GlobalSlot | None = None
        try:
            if route.global_limited:
                global_slot = await self._pass_global()
            ticket.sent_at = trio.current_time()
            yield slot
        finally:
            if global_slot is not None:
                self._finish_global(global_slot, answered=slot.response is not None)
            try:
                self._settle(route, ticket, slot)
            finally:
                if ticket.lock is not None:
                    ticket.lock.release()

    def _settle(self, route: Route, ticket: _Ticket, slot: _Slot) -> None:
        if slot.response is None:
            ticket.bucket.abandon()
            return
        response, now = slot.response, trio.current_time()
        info = RateLimitHeaders.parse(response.headers)
        self._map.learn(route, info.bucket)
        target, _ = self._bucket(self._map.key_for(route))
        probe = ticket.describes_current_window
        if target is not ticket.bucket:  # hash discovered: account on the real bucket
            ticket.bucket.abandon()
            target.in_flight += 1
            probe = target.limit is None
        target.observe(info, now, probe=probe, success=response.is_success)
        if response.status_code == 429:
            self._stats.responses_429 += 1
            slot.too_many = TooManyRequests.parse(response.content, response.headers)
            retry_after = slot.too_many.retry_after
            if retry_after is None:
                return
            if slot.too_many.is_global and route.global_limited:
                self._global.pause(retry_after, now)
            else:
                target.exhaust(retry_after, now)


class _Slot:
    """Carries the response of one request back to the gate."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None
        self.too_many: TooManyRequests | None = None


def _error_from(route: Route, response: httpx.Response) -> DiscordHTTPError:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("code")
        return DiscordHTTPError(
            response.status_code,
            code if isinstance(code, int) else None,
            str(data.get("message", response.reason_phrase)),
            route.key,
            data.get("errors") if isinstance(data.get("errors"), dict) else None,
        )
    text = response.text[:200] or response.reason_phrase
    return DiscordHTTPError(response.status_code, None, text, route.key)


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
        self._headers = {"Authorization": f"Bot {token}", "User-Agent": agent}
        self._max_retries = max_retries
        self.stats = RestStats()
        self._gate = _Gate(self.stats)
        self._dm_channels: dict[str, str] = {}

    async def _request(
        self,
        route: Route,
        *,
        json_body: Any = None,
        files: Sequence[UploadFile] = (),
        params: Mapping[str, str] | None = None,
        retry_safe: bool | None = None,
    ) -> Any:
        """Send with rate limiting and retries; return the decoded JSON (None for 204)."""
        if retry_safe is None:
            retry_safe = route.method in ("GET", "HEAD", "PUT", "DELETE")
        request_kwargs = self._encode(json_body, files)
        failures = limited = 0
        while True:
            async with self._gate.slot(route) as slot:
                self.stats.requests += 1
                self.stats.by_route[route.key] += 1
                try:
                    slot.response = await self._http.request(
                        route.method,
                        self._base + route.path,
                        params=params,
                        headers=self._headers,
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
                raise _error_from(route, response)
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
    ) -> dict[str, Any]:
        """Create a message; with ``nonce`` the send is idempotent and retried on 5xx."""
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
            route, json_body=body, files=files, retry_safe=nonce is not None
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
