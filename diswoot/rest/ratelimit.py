"""Pure rate-limit bookkeeping for Discord REST (no I/O, no clock of its own).

Every function takes ``now`` (seconds on the caller's monotonic clock, i.e. ``trio.current_time``).
Facts from discord-api.md §5.2: buckets are keyed by the discovered ``X-RateLimit-Bucket`` hash
plus the top-level resource (channel, guild, webhook[+token]); until the hash is known the key is
``"METHOD /template"``; all reaction routes share one key per channel; the global limit is 50
requests/s except for interaction callbacks and webhook-token routes; ``retry_after`` is seconds.
"""

from __future__ import annotations

import bisect
import collections
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote

GLOBAL_LIMIT = 50
GLOBAL_PERIOD = 1.0
GLOBAL_SAFETY_MARGIN = 0.015
"""Added to each global slot's learned margin: two clocks' rounding and jitter."""
MAX_MARGIN = 1.0
"""Global 429s never widen the margins by more than this."""
GLOBAL_429_WIDENING = 0.05
"""How much a global 429 widens the margins (it should never happen; if it does, learn)."""
RTT_SAMPLES = 64
"""Round trips remembered for the fastest one (the global window's reference)."""
GLOBAL_COALESCE = 0.025
"""Global slots that free within this many seconds of the next one are waited for and let go
together: at most half of it per period on average (1.25 % of the limit), and the work their
requests start and end is batched (store transactions, wake-ups; in a limit-bound reply burst
0.9 -> 0.75 transactions and ~-8 % CPU per reply against 10 ms, ~-10 % against 0)."""

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
class GlobalSlot:
    """One request's place in the global window: its send time and, once its request is over,
    its margin (see :class:`GlobalWindow`)."""

    sent_at: float
    over_at: float | None = None
    """When it was answered, or failed (then it may have reached Discord any time before)."""
    answered: bool = False


@dataclass
class GlobalWindow:
    """Proactive sliding window: at most ``limit`` requests reach Discord in any ``period``.

    Each request holds its slot from its *send* until ``period`` plus a small constant plus its
    own margin later: how much longer its round trip took than the fastest of the last
    :data:`RTT_SAMPLES` (a global 429 widens every margin for good).  Why that is enough:
    Discord counts a request when it arrives.  The outbound part of a round trip is at most the
    round trip less the quickest return, a later request's is at least the quickest outbound
    part, and the fastest recent round trip is taken to be those two (it met no queue, as some
    does whenever the link is not saturated).  So a request sent after an earlier one's slot
    freed arrives more than ``period`` after it.  A slot stays held until its request is over;
    one that failed without an answer may have arrived any time before, and is held for all of
    it.

    The slots of a burst free one by one, as their own answers came back, rather than all
    after the slowest: the next burst goes at the pace Discord served the first (a queue at
    Discord no longer costs a whole queue's length per period).  A steady link allows
    ``limit / (period + margin)``.
    """

    limit: int = GLOBAL_LIMIT
    period: float = GLOBAL_PERIOD
    paused_until: float = -math.inf
    slots: collections.deque[GlobalSlot] = field(default_factory=collections.deque)
    rtts: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=RTT_SAMPLES)
    )
    extra_margin: float = 0.0

    def _releaser(self) -> Callable[[GlobalSlot], float]:
        """slot -> when it frees (infinity while its request is in flight), as things stand."""
        hold = self.period + GLOBAL_SAFETY_MARGIN + self.extra_margin
        fastest = min(self.rtts) if self.rtts else 0.0  # nothing measured: the whole trip

        def release(slot: GlobalSlot) -> float:
            over_at = slot.over_at
            if over_at is None:
                return math.inf
            return over_at + hold - (min(fastest, over_at - slot.sent_at) if slot.answered else 0.0)

        return release

    def release_at(self, slot: GlobalSlot) -> float:
        """When ``slot`` frees (infinity while its request is in flight)."""
        return self._releaser()(slot)

    def delay(self, now: float) -> float:
        """Seconds until one more request may be sent (0 if it may go now; infinity: not
        before an answer frees a slot)."""
        slots, release = self.slots, self._releaser()
        while slots and release(slots[0]) <= now:
            slots.popleft()
        wait = self.paused_until - now
        if len(slots) >= self.limit:
            held = sorted(t for t in map(release, slots) if t > now)
            if len(held) >= self.limit:
                # the slot that lets one more go, and any that free just after it with it
                first = held[len(held) - self.limit]
                last = held[bisect.bisect_right(held, first + GLOBAL_COALESCE) - 1]
                wait = max(wait, last - now)
        return max(wait, 0.0)

    def start(self, now: float) -> GlobalSlot:
        """A request is being sent at ``now`` (call only when ``delay(now) == 0``)."""
        slot = GlobalSlot(now)
        self.slots.append(slot)
        return slot

    def finish(self, slot: GlobalSlot, now: float, *, answered: bool = True) -> float:
        """``slot``'s request was answered (or failed) at ``now``; when the slot frees.  Only
        answers teach the round trip: a failure may have been quick (refused) or slow, and its
        slot is held for the whole time it took."""
        slot.over_at, slot.answered = now, answered
        if answered:
            self.rtts.append(now - slot.sent_at)
        return self.release_at(slot)

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
