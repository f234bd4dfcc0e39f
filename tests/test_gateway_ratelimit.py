"""The 120/60 s gateway send limiter, on the autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from diswoot.gateway.ratelimit import SendLimiter


async def test_ordinary_sends_keep_slots_for_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = SendLimiter(limit=120, window=60.0, reserve=3)
    start = trio.current_time()
    with trio.fail_after(600):
        for _ in range(117):
            await limiter.acquire()
        assert trio.current_time() == start  # no waiting within the budget
        for _ in range(3):
            await limiter.acquire(priority=True)  # the reserve is for heartbeats
        assert trio.current_time() == start and limiter.used() == 120
        await limiter.acquire(priority=True)  # even heartbeats wait for the window to slide
        assert trio.current_time() == pytest.approx(start + 60)


async def test_ordinary_send_waits_for_window(autojump_clock: trio.testing.MockClock) -> None:
    limiter = SendLimiter(limit=5, window=10.0, reserve=2)
    start = trio.current_time()
    with trio.fail_after(600):
        for _ in range(3):
            await limiter.acquire()
            await trio.sleep(1)
        await limiter.acquire()  # the 4th ordinary send waits until the 1st leaves the window
        assert trio.current_time() == pytest.approx(start + 10)
        await limiter.acquire(priority=True)  # priority sends still have room
        assert trio.current_time() == pytest.approx(start + 10)


async def test_never_more_than_limit_in_any_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = SendLimiter(limit=10, window=6.0, reserve=1)
    stamps: list[float] = []

    async def sender(priority: bool) -> None:
        for _ in range(15):
            await limiter.acquire(priority=priority)
            stamps.append(trio.current_time())

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, False)
            nursery.start_soon(sender, True)
    stamps.sort()
    for i, t in enumerate(stamps):
        assert sum(1 for u in stamps[i:] if u < t + 6.0) <= 10


def test_reserve_must_fit() -> None:
    with pytest.raises(ValueError):
        SendLimiter(limit=3, reserve=3)
