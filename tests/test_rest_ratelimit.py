"""Pure rate-limit bookkeeping (diswoot.rest.ratelimit)."""

from __future__ import annotations

import heapq
import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _simulate_global_window(
    window: GlobalWindow,
    requests: list[tuple[int, float, float]],
    base_rtt: float,
    service: float = 0.0,
) -> list[float]:
    """Send ``requests`` (gap in ms, queueing delay, the share of it on the way there) through
    ``window``, with answers coming back while others wait; Discord's arrival times.  With a
    ``service`` time, Discord also serves one request at a time (its own queue, as a fake does)."""
    out_base = base_rtt / 2  # the unqueued trip, half each way
    now, server_free, arrivals, order = 0.0, 0.0, [], itertools.count()
    answers: list[tuple[float, int, GlobalSlot]] = []
    for gap_ms, queued, share in requests:
        now += gap_ms / 1000
        while True:
            while answers and answers[0][0] <= now:
                answered_at, _, slot = heapq.heappop(answers)
                window.finish(slot, answered_at)
            wait = window.delay(now)
            if wait == 0:
                break
            assert wait < math.inf or answers, "waiting for an answer that cannot come"
            now = min(now + wait, answers[0][0] if answers else math.inf)
        slot = window.start(now)
        arrival = now + out_base + share * queued
        if service:
            arrival = max(arrival, server_free)
            server_free = arrival + service
        arrivals.append(arrival)
        answer = arrival + service + base_rtt - out_base + (1 - share) * queued
        heapq.heappush(answers, (answer, next(order), slot))
    return sorted(arrivals)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.floats(0.0, 0.5), st.floats(0.0, 1.0)), max_size=300
    ),
    st.floats(0.005, 0.3),
)
def test_global_window_never_lets_more_than_the_limit_arrive_in_a_period(
    requests: list[tuple[int, float, float]], base_rtt: float
) -> None:
    """Whatever part of a round trip's queueing falls on the way there, and however many
    requests are in flight, Discord never counts more than ``limit`` in any period (once an
    unqueued round trip has been seen)."""
    window = GlobalWindow(limit=5, period=1.0)
    window.finish(GlobalSlot(0.0), base_rtt)  # the fastest round trip is learned from answers
    arrivals = _simulate_global_window(window, requests, base_rtt)
    for i, t in enumerate(arrivals):
        assert sum(1 for u in arrivals[i:] if u < t + 1.0) <= 5


def test_global_window_uses_nearly_the_whole_limit_on_a_steady_link() -> None:
    """Slots are held from the send, not from the answer: a slow link costs no throughput."""
    window, now, sent = GlobalWindow(), 0.0, []
    for _ in range(500):
        now += window.delay(now)
        slot = window.start(now)
        assert window.finish(slot, now + 0.2) == pytest.approx(now + 1.015)  # 200 ms, steady
        sent.append(now)
    rate = (len(sent) - 1) / (sent[-1] - sent[0])
    assert rate >= 0.95 * 50


def test_a_queue_at_discord_costs_a_burst_only_its_own_delays() -> None:
    """A burst queued behind itself at a Discord that serves one request per 10 ms: each slot
    frees as its own answer allows, so the next burst goes at the pace Discord took them."""
    window = GlobalWindow(limit=50, period=1.0)
    arrivals = _simulate_global_window(window, [(0, 0.0, 0.0)] * 150, 0.002, service=0.01)
    assert arrivals[-1] - arrivals[0] < 2.6  # all slots held for the burst's spread: 3.5 s
    for i, t in enumerate(arrivals):
        assert sum(1 for u in arrivals[i:] if u < t + 1.0) <= 50


def test_a_slot_frees_as_its_own_round_trip_allows_and_a_global_429_widens_it_for_good() -> None:
    window = GlobalWindow(limit=3, period=1.0)
    slots = [window.start(10.0) for _ in range(3)]
    assert window.delay(10.0) == math.inf  # all in flight: nothing frees before an answer
    assert window.finish(slots[0], 10.05) == pytest.approx(11.015)  # the fastest so far
    assert window.finish(slots[1], 10.45) == pytest.approx(11.415)  # 0.4 s slower
    assert window.delay(10.5) == pytest.approx(0.515)
    window.start(11.015)
    assert window.delay(11.015) == pytest.approx(0.4)  # slot 1; slot 2 is still in flight
    window.pause(2.0, 11.1)
    assert window.release_at(slots[1]) == pytest.approx(11.465)
    assert window.delay(11.1) == pytest.approx(2.0)  # paused until 13.1
    assert window.delay(13.1) == 0


@pytest.mark.parametrize(("apart", "first_goes_at"), [(0.02, 1.035), (0.03, 1.015)])
def test_slots_that_free_within_25_ms_of_the_next_one_go_together(
    apart: float, first_goes_at: float
) -> None:
    window = GlobalWindow(limit=2, period=1.0)
    first, second = window.start(0.0), window.start(0.0)
    window.finish(first, 0.05)  # frees at 1.015
    window.finish(second, 0.05 + apart)  # frees ``apart`` later
    assert window.delay(0.1) == pytest.approx(first_goes_at - 0.1)
    window.finish(window.start(first_goes_at), first_goes_at + 0.05)
    window.start(first_goes_at)
    # one slot held by an answered request, one in flight: no waiting for the one in flight
    assert window.delay(first_goes_at) == pytest.approx(1.015)


def test_a_failed_request_holds_its_slot_for_the_whole_time_it_took() -> None:
    """No answer: it may have reached Discord at any moment before it failed."""
    window = GlobalWindow(limit=2, period=1.0)
    window.finish(window.start(0.0), 0.05)
    failed = window.start(0.0)
    assert window.finish(failed, 0.3, answered=False) == pytest.approx(1.315)
    assert min(window.rtts) == pytest.approx(0.05)  # a failure teaches no round trip


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
