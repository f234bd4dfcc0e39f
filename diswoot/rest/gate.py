"""The trio side of Discord's rate limits: per-bucket FIFO reservations and the global window.

Around the pure bookkeeping of :mod:`diswoot.rest.ratelimit`, each request reserves a slot in
its bucket, then in the proactive global window (50/s).  An answer never raises a bucket's known
state within a window unless it tells the state now (:attr:`_Ticket.describes_current_window`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import trio

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

_PRUNE_AT = 512


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


class RateLimitGate:
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
