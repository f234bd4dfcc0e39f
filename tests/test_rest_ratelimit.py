"""Pure rate-limit bookkeeping (diswoot.rest.ratelimit)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diswoot.rest.ratelimit import (
    BucketMap,
    BucketState,
    Decision,
    GlobalWindow,
    RateLimitHeaders,
    Route,
    TooManyRequests,
)


def headers(
    limit: int, remaining: int, reset_after: float, bucket: str = "abc"
) -> RateLimitHeaders:
    return RateLimitHeaders(limit, remaining, reset_after, bucket)


def test_route_keys_and_major_parameters() -> None:
    send_a = Route.of("POST", "/channels/{channel_id}/messages", channel_id="1")
    send_b = Route.of("POST", "/channels/{channel_id}/messages", channel_id="2")
    assert send_a.key == send_b.key == "POST /channels/{channel_id}/messages"
    assert send_a.major != send_b.major
    put = Route.of(
        "PUT",
        "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
        channel_id="1",
        message_id="5",
        emoji="👍",
    )
    delete = Route.of(
        "DELETE",
        "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
        channel_id="1",
        message_id="6",
        emoji="x:1",
    )
    assert put.key == delete.key
    assert put.major == delete.major == "channel_id:1"
    assert put.path == "/channels/1/messages/5/reactions/%F0%9F%91%8D/@me"
    assert delete.path.endswith("/reactions/x%3A1/@me")
    webhook = Route.of(
        "POST", "/webhooks/{webhook_id}/{webhook_token}", webhook_id="9", webhook_token="t"
    )
    assert webhook.major == "webhook:9:t"
    assert not webhook.global_limited
    callback = Route.of(
        "POST",
        "/interactions/{interaction_id}/{interaction_token}/callback",
        interaction_id="3",
        interaction_token="t",
    )
    assert not callback.global_limited
    assert send_a.global_limited
    assert Route.of("GET", "/users/@me").major == ""


def test_headers_parse_case_insensitive_and_tolerant() -> None:
    parsed = RateLimitHeaders.parse(
        {
            "X-Ratelimit-Limit": "5",
            "x-ratelimit-remaining": "4",
            "X-RATELIMIT-RESET-AFTER": "1.25",
            "X-RateLimit-Bucket": "hash",
            "X-RateLimit-Scope": "shared",
        }
    )
    assert parsed == RateLimitHeaders(5, 4, 1.25, "hash", "shared", False)
    assert parsed.complete
    broken = RateLimitHeaders.parse({"x-ratelimit-limit": "x", "x-ratelimit-reset-after": "nan"})
    assert broken.limit is None
    assert broken.reset_after is None
    assert not broken.complete


def test_429_bodies() -> None:
    body = json.dumps({"message": "slow", "retry_after": 1.5, "global": True}).encode()
    assert TooManyRequests.parse(body, {}) == TooManyRequests(1.5, True, None)
    user = TooManyRequests.parse(
        b'{"retry_after": 2, "global": false}', {"X-RateLimit-Scope": "user"}
    )
    assert user == TooManyRequests(2.0, False, "user")
    assert TooManyRequests.parse(b"<html>banned</html>", {}).retry_after is None
    assert TooManyRequests.parse(b'{"message": "no retry"}', {}).retry_after is None


def test_bucket_lifecycle() -> None:
    bucket = BucketState()
    assert bucket.decide(0.0) == (Decision.PROBE, 0.0)
    bucket.reserve(Decision.PROBE)
    bucket.observe(headers(3, 2, 5.0), 0.1, probe=True, success=True)
    assert (bucket.limit, bucket.remaining, bucket.reset_at) == (3, 2, 5.1)
    for _ in range(2):
        decision, _ = bucket.decide(1.0)
        assert decision is Decision.GO
        bucket.reserve(decision)
    decision, delay = bucket.decide(1.0)
    assert decision is Decision.WAIT
    assert delay == pytest.approx(4.1)
    with pytest.raises(ValueError):
        bucket.reserve(decision)
    # A stale response cannot raise what was already reserved.
    bucket.observe(headers(3, 2, 4.0), 1.1, probe=False, success=True)
    assert bucket.remaining == 0
    assert bucket.decide(5.2)[0] is Decision.PROBE


def test_bucket_without_headers_becomes_unlimited_only_on_success() -> None:
    bucket = BucketState()
    bucket.reserve(Decision.PROBE)
    bucket.observe(RateLimitHeaders(), 0.0, probe=True, success=False)
    assert bucket.decide(0.0)[0] is Decision.PROBE
    bucket.reserve(Decision.PROBE)
    bucket.observe(RateLimitHeaders(), 0.0, probe=True, success=True)
    assert bucket.decide(0.0)[0] is Decision.GO


def test_exhaust_after_429() -> None:
    bucket = BucketState()
    bucket.exhaust(2.5, 10.0)
    decision, delay = bucket.decide(11.0)
    assert decision is Decision.WAIT
    assert delay == pytest.approx(1.5)
    assert bucket.decide(12.5)[0] is Decision.PROBE


def test_bucket_map_learns_hash() -> None:
    bucket_map = BucketMap()
    route = Route.of("POST", "/channels/{channel_id}/messages", channel_id="7")
    assert bucket_map.key_for(route) == "POST /channels/{channel_id}/messages|channel_id:7"
    assert bucket_map.learn(route, "h1")
    assert not bucket_map.learn(route, "h1")
    assert not bucket_map.learn(route, None)
    assert bucket_map.key_for(route) == "h1|channel_id:7"


# A server-side fixed window, as Discord (and FakeDiscord) keep it.
class ServerWindow:
    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period = limit, period
        self.start, self.count = -math.inf, 0

    def process(self, now: float) -> RateLimitHeaders:
        if now >= self.start + self.period:
            self.start, self.count = now, 0
        assert self.count < self.limit, "request sent into an exhausted bucket"
        self.count += 1
        return headers(self.limit, self.limit - self.count, self.start + self.period - now)


events = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.just(0)),
        st.tuples(st.just("deliver"), st.integers(0, 20)),
        st.tuples(st.just("respond"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(1, 3000)),
    ),
    max_size=100,
)


@settings(max_examples=500, deadline=None)
@given(events, st.integers(1, 6), st.integers(1, 5))
def test_never_sends_into_an_exhausted_bucket(
    script: list[tuple[str, int]], limit: int, period: int
) -> None:
    """Random sends, delayed/reordered delivery and responses, and clock jumps never overrun
    the server's window (the server asserts it)."""
    server, bucket, now = ServerWindow(limit, float(period)), BucketState(), 0.0
    on_the_wire: list[bool] = []  # probe flag of requests the server has not seen yet
    processed: list[tuple[RateLimitHeaders, bool]] = []
    probing = False
    for kind, arg in script:
        if kind == "advance":
            now += arg / 1000
        elif kind == "send" and not probing:
            decision, _ = bucket.decide(now)
            if decision is Decision.WAIT:
                continue
            bucket.reserve(decision)
            on_the_wire.append(decision is Decision.PROBE)
            probing = decision is Decision.PROBE
        elif kind == "deliver" and on_the_wire:
            probe = on_the_wire.pop(arg % len(on_the_wire))
            processed.append((server.process(now), probe))
        elif kind == "respond" and processed:
            info, probe = processed.pop(arg % len(processed))
            bucket.observe(info, now, probe=probe, success=True)
            probing = probing and not probe
    assert bucket.in_flight == len(on_the_wire) + len(processed)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.floats(0.0, 1.0)), max_size=300),
    st.floats(0.005, 0.3),
    st.floats(0.0, 0.2),
)
def test_global_window_never_lets_more_than_the_limit_arrive_in_a_period(
    requests: list[tuple[int, float]], base_rtt: float, jitter: float
) -> None:
    """Whatever part of a round trip's spread falls on the way there, Discord never counts
    more than ``limit`` requests in any period (once the spread has been seen)."""
    window, now = GlobalWindow(limit=5, period=1.0), 0.0
    for rtt in (base_rtt, base_rtt + jitter):  # the spread is learned from answers
        window.finish(0.0, rtt)
    arrivals = []
    for gap_ms, share in requests:
        now += gap_ms / 1000
        now += window.delay(now)
        assert window.delay(now) == 0
        window.start(now)
        rtt = base_rtt + share * jitter
        arrivals.append(now + share * jitter)  # all of the variation on the way there
        window.finish(now, now + rtt)
    arrivals.sort()
    for i, t in enumerate(arrivals):
        assert sum(1 for u in arrivals[i:] if u < t + 1.0) <= 5


def test_global_window_uses_nearly_the_whole_limit_on_a_steady_link() -> None:
    """Slots are held from the send, not from the answer: a slow link costs no throughput."""
    window, now, sent = GlobalWindow(), 0.0, []
    for _ in range(500):
        now += window.delay(now)
        window.start(now)
        window.finish(now, now + 0.2)  # 200 ms round trips, steady
        sent.append(now)
    rate = (len(sent) - 1) / (sent[-1] - sent[0])
    assert rate >= 0.95 * 50
    assert window.margin == pytest.approx(0.015)


def test_an_unsteady_link_widens_the_margin_and_a_global_429_widens_it_for_good() -> None:
    window = GlobalWindow(limit=3, period=1.0)
    assert window.margin == pytest.approx(0.265)  # nothing measured yet: cautious
    window.finish(0.0, 0.05)
    window.finish(0.0, 0.45)
    assert window.margin == pytest.approx(0.415)
    for _ in range(3):
        assert window.delay(10.0) == 0
        window.start(10.0)
    assert window.delay(10.0) == pytest.approx(1.415)
    window.pause(2.0, 10.0)
    assert window.margin == pytest.approx(0.465)
    assert window.delay(11.0) == pytest.approx(1.0)  # paused until 12, slots free at 11.465
    assert window.delay(11.5) == pytest.approx(0.5)
    assert window.delay(12.0) == 0


def test_straggler_from_the_old_window_is_counted_in_the_new_one() -> None:
    """A request reserved before the reset may reach the server after it: stay conservative."""
    server, bucket = ServerWindow(3, 1.0), BucketState()
    bucket.reserve(Decision.PROBE)
    bucket.observe(server.process(0.0), 0.0, probe=True, success=True)
    bucket.reserve(bucket.decide(0.1)[0])  # GO "A", delayed on the wire
    decision, _ = bucket.decide(1.5)
    assert decision is Decision.PROBE
    bucket.reserve(decision)
    bucket.observe(server.process(1.5), 1.5, probe=True, success=True)  # new window: 1 used
    server.process(1.6)  # A finally arrives: 2 used
    sent = 0
    while bucket.decide(1.7)[0] is Decision.GO:
        bucket.reserve(Decision.GO)
        server.process(1.7)
        sent += 1
    assert sent == 1
