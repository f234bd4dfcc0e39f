"""InboxCache: five-minute TTL, background refresh, no fetch on the hot path, failures tolerated.

FakeChatwoot is called in-process through httpx.ASGITransport (no sockets), so the autojump
clock can run minutes of TTL instantly while the fake still records every request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.inbox_cache import DEFAULT_TTL, RETRY_AFTER_FAILURE, InboxCache
from diswoot.testing.fake_chatwoot import FakeChatwoot

INBOX_PATH = "/api/v1/accounts/1/inboxes/7"


@pytest.fixture
async def chatwoot() -> AsyncIterator[tuple[FakeChatwoot, ChatwootClient]]:
    fake = FakeChatwoot()
    base = "http://chatwoot.test"
    app: Any = fake.app  # quart's precise ASGI types vs httpx's generic ones
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as http:
        yield fake, ChatwootClient(
            http, base_url=base, account_id=1, inbox_id=7, api_token=fake.api_token
        )


def inbox_fetches(fake: FakeChatwoot) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path == INBOX_PATH)


def test_ttl_is_five_minutes() -> None:
    assert DEFAULT_TTL == 300


async def test_background_refresh_every_five_minutes(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    chatwoot: tuple[FakeChatwoot, ChatwootClient],
) -> None:
    fake, client = chatwoot
    cache = InboxCache(client)
    with trio.fail_after(3600):
        first_change = cache.changed
        await nursery.start(cache.run)
        assert inbox_fetches(fake) == 1
        assert first_change.is_set()
        assert cache.current is not None and cache.current.name == "Discord"

        fake.inbox["name"] = "Support"
        fake.inbox["csat_survey_enabled"] = True
        second_change = cache.changed
        await trio.sleep(DEFAULT_TTL - 1)
        assert inbox_fetches(fake) == 1
        assert cache.current.name == "Discord"
        await second_change.wait()
        assert trio.current_time() == DEFAULT_TTL
        assert inbox_fetches(fake) == 2
        assert cache.current.name == "Support" and cache.current.csat_survey_enabled


async def test_hot_path_never_fetches_once_warm(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    chatwoot: tuple[FakeChatwoot, ChatwootClient],
) -> None:
    fake, client = chatwoot
    cache = InboxCache(client)
    with trio.fail_after(3600):
        await nursery.start(cache.run)
        for _ in range(39):  # 19.5 minutes of traffic, a lookup every 30 s
            await trio.sleep(30)
            for _ in range(10):
                assert await cache.get() is cache.current is not None
        # only the warm-up and the background refreshes at 5, 10 and 15 minutes
        assert inbox_fetches(fake) == 4


async def test_failed_refresh_keeps_the_old_value_and_retries_sooner(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    chatwoot: tuple[FakeChatwoot, ChatwootClient],
) -> None:
    fake, client = chatwoot
    cache = InboxCache(client)
    with trio.fail_after(3600):
        await nursery.start(cache.run)
        warm = cache.current
        assert warm is not None and cache.last_error is None
        fake.down = True
        await trio.sleep(DEFAULT_TTL + 1)
        assert inbox_fetches(fake) == 2
        assert cache.current is warm
        assert cache.last_error is not None and "503" in cache.last_error
        assert await cache.get() is warm  # the hot path does not try while it is down
        assert inbox_fetches(fake) == 2

        fake.down = False
        fake.inbox["name"] = "Back"
        changed = cache.changed
        await changed.wait()
        assert trio.current_time() == DEFAULT_TTL + RETRY_AFTER_FAILURE
        assert cache.current is not None and cache.current.name == "Back"
        assert cache.last_error is None


async def test_without_background_loop_get_fetches_when_cold_or_stale(
    autojump_clock: trio.testing.MockClock, chatwoot: tuple[FakeChatwoot, ChatwootClient]
) -> None:
    fake, client = chatwoot
    cache = InboxCache(client)
    with trio.fail_after(3600):
        assert cache.current is None and cache.stale
        first = await cache.get()
        assert first is not None and inbox_fetches(fake) == 1
        await trio.sleep(DEFAULT_TTL - 1)
        assert await cache.get() is first
        assert inbox_fetches(fake) == 1
        await trio.sleep(1)
        assert cache.stale
        assert await cache.get() is not None
        assert inbox_fetches(fake) == 2


async def test_cold_cache_with_chatwoot_down_is_none(
    autojump_clock: trio.testing.MockClock, chatwoot: tuple[FakeChatwoot, ChatwootClient]
) -> None:
    fake, client = chatwoot
    fake.down = True
    cache = InboxCache(client)
    with trio.fail_after(60):
        assert await cache.get() is None
        assert cache.last_error is not None
        fake.down = False
        assert await cache.get() is not None  # cold: the next lookup tries again
        assert inbox_fetches(fake) == 2


async def test_unknown_inbox_keeps_the_old_value(
    autojump_clock: trio.testing.MockClock, chatwoot: tuple[FakeChatwoot, ChatwootClient]
) -> None:
    fake, client = chatwoot
    cache = InboxCache(client)
    with trio.fail_after(60):
        warm = await cache.refresh()
        fake.inbox_id = 8  # the inbox was deleted: GET answers 404
        assert await cache.refresh() is warm
        assert cache.current is warm
        assert cache.last_error is not None and "404" in cache.last_error


async def test_run_returns_on_stop(
    autojump_clock: trio.testing.MockClock, chatwoot: tuple[FakeChatwoot, ChatwootClient]
) -> None:
    _, client = chatwoot
    cache = InboxCache(client)
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run, stop)
            await trio.sleep(10)
            stop.set()
        assert trio.current_time() == 10  # returned at once, not at the next refresh
