"""The benchmark's request stamps: a request reaching a fake's app is stamped on arrival."""

from __future__ import annotations

import time
from typing import Any

from bench.world import ARRIVAL, StampArrival, TimedLog


async def test_a_request_is_stamped_when_it_reached_the_app_not_when_it_was_logged() -> None:
    log: TimedLog[str] = TimedLog()
    seen: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(ARRIVAL.get())
        while time.perf_counter() == seen[0]:  # the app's own work takes time
            pass
        log.append("request")

    await StampArrival(app)({"type": "http"}, None, None)
    assert log.stamps == seen
    assert ARRIVAL.get(None) is None  # reset after the request
    before = time.perf_counter()
    log.append("outside a request")
    assert log.stamps[1] >= before
