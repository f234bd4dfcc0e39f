"""Chatwoot's rack-attack limit (3,000 requests/min per IP, fixed windows, a bare 429): the
fake enforces it when asked, the client respects it, and a backlog drains at the cap."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
import trio

from diswoot.chatwoot.throttle import FixedWindowThrottle
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.harness import bridge_world


class Wall:
    def __init__(self, now: float = 6000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_429_blocks_the_window_and_what_fitted_becomes_the_budget() -> None:
    wall = Wall(6000.0)  # a window boundary (60 s windows)
    throttle = FixedWindowThrottle(wall=wall)
    for _ in range(31):
        assert throttle.delay() == 0
    for _ in range(29):
        throttle.accepted()
    wall.now = 6010.0
    wait = throttle.rate_limited(None)  # the 31st was refused
    assert wait == pytest.approx(51.0)  # to the next window, plus a second
    assert throttle.budget == 29
    throttle.accepted()  # one more was still in flight: it fitted too
    assert throttle.budget == 30
    assert throttle.delay() == pytest.approx(51.0)  # nothing more in this window
    wall.now = 6061.0
    sent = 0
    while throttle.delay() == 0:
        sent += 1
    assert sent == 30  # the budget, without another 429
    wall.now = 6121.0
    sent = 0
    while throttle.delay() == 0:
        sent += 1
    assert sent == 31  # the whole budget fitted last window: grow it again
    assert throttle.throttled == 1


def test_the_servers_date_places_its_window() -> None:
    wall = Wall(6050.0)
    throttle = FixedWindowThrottle(wall=wall)
    assert throttle.delay() == 0
    # the server's clock is 20 s ahead (6070 + half its 1 s resolution): its next window
    # starts at its 6120, 49.5 s from now, plus the margin
    wait = throttle.rate_limited("Thu, 01 Jan 1970 01:41:10 GMT")
    assert wait == pytest.approx(50.5)
    wall.now = 6050.4
    throttle.rate_limited("Thu, 01 Jan 1970 01:40:50 GMT")  # within the Date's resolution
    assert throttle.delay() == pytest.approx(10.6)
    assert throttle.rate_limited("garbage") == pytest.approx(10.6)  # a bad Date is ignored


async def test_the_fake_throttles_like_rack_attack(nursery: trio.Nursery) -> None:
    fake = FakeChatwoot(rack_attack_limit=3, rack_attack_period=3600.0)
    fake.clock = lambda: 7200.5
    await fake.serve(nursery)
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        headers = {"api_access_token": fake.api_token}
        url = f"/api/v1/accounts/{fake.account_id}/inboxes/{fake.inbox_id}"
        statuses = [(await http.get(url, headers=headers)).status_code for _ in range(4)]
        throttled = await http.get(url, headers=headers)
        health = await http.get("/health")
    assert statuses == [200, 200, 200, 429]
    assert throttled.text == "Retry later\n" and "retry-after" not in throttled.headers
    assert throttled.headers["content-type"].startswith("text/plain")
    assert health.status_code == 200  # safelisted
    assert fake.throttled == [7200.5, 7200.5]


async def test_a_backlog_drains_at_the_cap_in_order_exactly_once(tmp_path: Path) -> None:
    limit, period, users, per_user = 15, 1.0, 30, 3
    with trio.fail_after(60):
        async with bridge_world(
            tmp_path,
            greeting_enabled=False,
            confirm_emoji="",
            chatwoot_options={"rack_attack_limit": limit, "rack_attack_period": period},
        ) as world:
            throttle = world.daemon.ctx.chatwoot.throttle
            throttle.period, throttle.margin = period, 0.05
            ids = [str(80351110224678912 + n) for n in range(users)]
            for uid in ids:
                world.discord.add_user(uid, f"user{uid[-2:]}")
            world.chatwoot.down = True  # an outage: the DMs pile up, stored
            sent: dict[str, tuple[str, int]] = {}
            for n in range(per_user):
                for uid in ids:
                    sent[world.discord.user_sends(uid, f"dm {n}")["id"]] = (uid, n)
            await world.wait_for(lambda: world.daemon.inbound.queue.depth == len(sent))
            world.chatwoot.down = False
            started = trio.current_time()

            def delivered() -> list[dict[str, object]]:
                return [
                    m for m in sorted(world.chatwoot.messages.values(), key=lambda m: m["id"])
                    if m["source_id"] in sent
                ]

            await world.wait_for(lambda: len(delivered()) >= len(sent), timeout=50)
            took = trio.current_time() - started
            messages = delivered()
            assert len(messages) == len(sent)  # exactly once
            order: dict[str, list[int]] = defaultdict(list)
            for m in messages:
                uid, n = sent[str(m["source_id"])]
                order[uid].append(n)
            assert all(seq == list(range(per_user)) for seq in order.values())
            requests = len(world.chatwoot.requests)
            windows = Counter(int(t // period) for t in world.chatwoot.throttled)
            # no retry storm: the first window teaches the budget (every lane already in
            # flight may be refused there); after it, a handful of 429s per window at most
            later = [count for _, count in sorted(windows.items())[1:]]
            assert max(later, default=0) <= 4, windows
            # near the cap: not much slower than one window per `limit` requests (a busy CI
            # machine gets some slack; a storm of retries with backoff takes far longer)
            assert took <= (1.5 * requests / limit + 3) * period, (took, requests)
            assert world.chatwoot.violations == []
