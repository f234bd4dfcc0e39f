"""Pure rate-limit bookkeeping for Discord REST (no I/O, no clock of its own).

Every function takes ``now`` (seconds on the caller's monotonic clock, i.e. ``trio.current_time``).
Facts from discord-api.md §5.2: buckets are keyed by the discovered ``X-RateLimit-Bucket`` hash
plus the top-level resource (channel, guild, webhook[+token]); until the hash is known the key is
``"METHOD /template"``; all reaction routes share one key per channel; the global limit is 50
requests/s except for interaction callbacks and webhook-token routes; ``retry_after`` is seconds.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote

GLOBAL_LIMIT = 50
GLOBAL_PERIOD = 1.0
GLOBAL_SAFETY_MARGIN = 0.015
"""Added to the learned margin of the global window: two clocks' rounding and jitter."""
UNKNOWN_RTT_MARGIN = 0.25
"""The global window's margin before any round trip was measured."""
MAX_MARGIN = 1.0
"""The margin never exceeds this: as cautious as holding a slot a period past the answer."""
GLOBAL_429_WIDENING = 0.05
"""How much a global 429 widens the margin (it should never happen; if it does, learn)."""
RTT_SAMPLES = 64

_MAJOR_PARAMS = ("channel_id", "guild_id", "webhook_id")
_REACTIONS_PREFIX = "/channels/{channel_id}/messages/{message_id}/reactions"


@dataclass(frozen=True)
class Route:
    """One REST call: method, path template and its (unquoted) parameters."""

    method: str
    template: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, method: str, template: str, **params: str) -> Route:
        return cls(method.upper(), template, tuple(params.items()))

    @property
    def path(self) -> str:
        """The concrete path; every parameter is percent-encoded with ``safe=""``."""
        return self.template.format(**{k: quote(v, safe="") for k, v in self.params})

    @property
    def key(self) -> str:
        """Route key used until the bucket hash is known (reactions share one)."""
        if self.template.startswith(_REACTIONS_PREFIX):
            return f"REACTIONS {_REACTIONS_PREFIX}"
        return f"{self.method} {self.template}"

    @property
    def major(self) -> str:
        """The top-level resource the bucket counts separately (may contain a secret token)."""
        params = dict(self.params)
        if "webhook_id" in params and "webhook_token" in params:
            return f"webhook:{params['webhook_id']}:{params['webhook_token']}"
        if "interaction_id" in params:
            return f"interaction:{params['interaction_id']}"
        for name in _MAJOR_PARAMS:
            if name in params:
                return f"{name}:{params[name]}"
        return ""

    @property
    def global_limited(self) -> bool:
        """Interaction callbacks and webhook-token routes are exempt from the global limit."""
        return not (
            self.template.startswith("/interactions/") or "{webhook_token}" in self.template
        )


@dataclass(frozen=True)
class RateLimitHeaders:
    """The ``X-RateLimit-*`` headers of one response (absent ones are ``None``)."""

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    bucket: str | None = None
    scope: str | None = None
    is_global: bool = False

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders:
        """Parse case-insensitively; malformed numbers count as absent."""
        lower = {k.lower(): v for k, v in headers.items()}

        def number(name: str) -> float | None:
            try:
                value = float(lower[name])
            except (KeyError, ValueError):
                return None
            return value if math.isfinite(value) else None

        limit, remaining = number("x-ratelimit-limit"), number("x-ratelimit-remaining")
        return cls(
            limit=None if limit is None else int(limit),
            remaining=None if remaining is None else int(remaining),
            reset_after=number("x-ratelimit-reset-after"),
            bucket=lower.get("x-ratelimit-bucket") or None,
            scope=lower.get("x-ratelimit-scope") or None,
            is_global=lower.get("x-ratelimit-global", "").lower() == "true",
        )

    @property
    def complete(self) -> bool:
        return None not in (self.limit, self.remaining, self.reset_after)


@dataclass(frozen=True)
class TooManyRequests:
    """What a 429 asks for; ``retry_after is None`` means not Discord (Cloudflare ban)."""

    retry_after: float | None
    is_global: bool
    scope: str | None

    @classmethod
    def parse(cls, body: bytes, headers: Mapping[str, str]) -> TooManyRequests:
        info = RateLimitHeaders.parse(headers)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("retry_after"), int | float):
            return cls(None, False, info.scope)
        is_global = bool(data.get("global")) or info.is_global or info.scope == "global"
        return cls(max(0.0, float(data["retry_after"])), is_global, info.scope)


class Decision(Enum):
    GO = "go"  # reserved one slot; send concurrently
    PROBE = "probe"  # state unknown: send alone, hold the bucket until the response
    WAIT = "wait"  # exhausted: wait ``delay`` and ask again


@dataclass
class BucketState:
    """Client-side view of one bucket (one hash + major parameter).

    ``remaining`` counts slots not yet reserved in the current window. It only ever moves to
    the conservative side: a response can lower it, never raise it within a window, and each
    request still in flight is assumed to land in the newest window.
    """

    limit: int | None = None
    remaining: int = 0
    reset_at: float = -math.inf
    in_flight: int = 0
    unlimited: bool = False

    def decide(self, now: float) -> tuple[Decision, float]:
        """What the next request may do at ``now``; for WAIT, how long to wait."""
        if self.unlimited:
            return Decision.GO, 0.0
        if self.limit is None or now >= self.reset_at:
            return Decision.PROBE, 0.0
        if self.remaining > 0:
            return Decision.GO, 0.0
        return Decision.WAIT, self.reset_at - now

    def reserve(self, decision: Decision) -> None:
        """Account for a request about to be sent after ``decide``."""
        if decision is Decision.WAIT:
            raise ValueError("cannot send into an exhausted bucket")
        if decision is Decision.GO and not self.unlimited:
            self.remaining -= 1
        self.in_flight += 1

    def observe(self, info: RateLimitHeaders, now: float, *, probe: bool, success: bool) -> None:
        """A response arrived for a request reserved on this bucket."""
        self.in_flight -= 1
        if not info.complete:
            if success and self.limit is None:
                self.unlimited = True
            return
        assert info.limit is not None and info.remaining is not None
        assert info.reset_after is not None
        self.unlimited = False
        others = max(self.in_flight, 0)
        from_server = max(info.remaining - others, 0)
        reset_at = now + info.reset_after
        if probe or self.limit is None:
            self.remaining = from_server
            self.reset_at = reset_at
        else:
            self.remaining = min(self.remaining, from_server)
            self.reset_at = max(self.reset_at, reset_at)
        self.limit = info.limit

    def abandon(self) -> None:
        """The request failed without a response (network error)."""
        self.in_flight -= 1

    def exhaust(self, retry_after: float, now: float) -> None:
        """A 429 for this bucket: nothing may go until ``retry_after`` has passed."""
        self.remaining = 0
        self.reset_at = max(self.reset_at, now + retry_after)
        if self.limit is None:
            self.limit = 1
        self.unlimited = False

    def idle(self, now: float) -> bool:
        """Safe to forget: nothing in flight and the window is over."""
        return self.in_flight == 0 and now >= self.reset_at


@dataclass
class GlobalWindow:
    """Proactive sliding window: at most ``limit`` requests reach Discord in any ``period``.

    A request holds its slot from its *send* until ``period + margin`` later.  Discord counts
    it when it arrives, some unknown part of its round trip after the send; two requests a
    period apart can only arrive closer together than they were sent when the later one's
    trip is shorter, by at most the spread of recent round trips (which includes the time a
    busy event loop spent between this gate and the socket).  So ``margin`` is that spread,
    learned from the last :data:`RTT_SAMPLES` answers, plus a small constant; a global 429
    widens it for good.  On a steady link that allows ``limit / (period + margin)``.
    """

    limit: int = GLOBAL_LIMIT
    period: float = GLOBAL_PERIOD
    paused_until: float = -math.inf
    sent: collections.deque[float] = field(default_factory=collections.deque)
    rtts: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=RTT_SAMPLES)
    )
    extra_margin: float = 0.0

    @property
    def margin(self) -> float:
        """Seconds a slot is held beyond ``period`` after its send."""
        spread = max(self.rtts) - min(self.rtts) if self.rtts else UNKNOWN_RTT_MARGIN
        return min(MAX_MARGIN, GLOBAL_SAFETY_MARGIN + spread + self.extra_margin)

    def delay(self, now: float) -> float:
        """Seconds until one more request may be sent (0 if it may go now)."""
        hold = self.period + self.margin
        sent = self.sent
        while sent and sent[0] <= now - hold:
            sent.popleft()
        wait = self.paused_until - now
        if len(sent) >= self.limit:
            wait = max(wait, sent[len(sent) - self.limit] + hold - now)
        return max(wait, 0.0)

    def start(self, now: float) -> None:
        """A request is being sent at ``now`` (call only when ``delay(now) == 0``)."""
        self.sent.append(now)

    def finish(self, sent_at: float, now: float) -> None:
        """The request sent at ``sent_at`` was answered at ``now``: learn its round trip."""
        self.rtts.append(max(0.0, now - sent_at))

    def pause(self, retry_after: float, now: float) -> None:
        """A global 429: nothing global-limited goes for ``retry_after``; widen the margin."""
        self.paused_until = max(self.paused_until, now + retry_after)
        self.extra_margin = min(MAX_MARGIN, self.extra_margin + GLOBAL_429_WIDENING)


@dataclass
class BucketMap:
    """Route key -> discovered bucket hash, and the limiter key of a route."""

    hashes: dict[str, str] = field(default_factory=dict)

    def key_for(self, route: Route) -> str:
        return f"{self.hashes.get(route.key, route.key)}|{route.major}"

    def learn(self, route: Route, bucket_hash: str | None) -> bool:
        """Remember the hash from a response; True if the route's limiter key changed."""
        if not bucket_hash or self.hashes.get(route.key) == bucket_hash:
            return False
        self.hashes[route.key] = bucket_hash
        return True
