"""Deliveries waiting out a Discord outage run as soon as the gateway is ready again."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from diswoot.bridge.jobs import JobQueue, RetryLater
from diswoot.bridge.outbound import GATEWAY_POLL_SECONDS, wake_when_discord_is_ready
from diswoot.gateway.events import GatewayStatus
from diswoot.store import Job, open_store

BACKOFF = 100.0  # longer than any outage here: only a wake-up runs the job before it ends
SLACK = 2 * GATEWAY_POLL_SECONDS + 1.0  # the poll, and one more should a jump land mid-step


async def run_with_outage(
    tmp_path: Path, gateway: GatewayStatus, outage: list[tuple[float, str]]
) -> list[float]:
    """One job that fails once (back-off ``BACKOFF``); the gateway's state changes at the
    given times.  Returns when the job ran (trio time)."""
    ran: list[float] = []
    done = trio.Event()

    async def handler(job: Job) -> None:
        ran.append(trio.current_time())
        if len(ran) == 1:
            raise RetryLater("Discord answered 503", delay=BACKOFF)
        done.set()

    async with open_store(tmp_path / "w.db") as store:
        queue = JobQueue(store, "outbound", handler)
        await queue.submit("reply", "msg:1", "42", {})
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run, stop)
            nursery.start_soon(wake_when_discord_is_ready, gateway, queue, stop)
            start = trio.current_time()
            for at, state in outage:
                await trio.sleep_until(start + at)
                gateway.set_state(state)
            with trio.fail_after(BACKOFF * 2):
                await done.wait()
            stop.set()
    return [t - start for t in ran]


async def test_a_waiting_delivery_runs_when_discord_is_back(
    tmp_path: Path, idle_jump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = GatewayStatus(state="ready")
    caplog.set_level(logging.INFO, logger="diswoot.outbound")
    outage = [(1.0, "disconnected"), (20.0, "connecting"), (40.0, "ready")]
    first, second = await run_with_outage(tmp_path, gateway, outage)
    assert first < 1.0
    assert 40.0 <= second <= 40.0 + SLACK
    assert "Discord is back; retrying 1 waiting delivery(ies) now" in caplog.text


async def test_the_first_ready_after_start_up_is_not_called_a_return(
    tmp_path: Path, idle_jump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = GatewayStatus(state="connecting")  # Discord was unreachable at start-up
    caplog.set_level(logging.INFO, logger="diswoot.outbound")
    first, second = await run_with_outage(tmp_path, gateway, [(30.0, "ready")])
    assert first < 1.0
    assert 30.0 <= second <= 30.0 + SLACK
    assert "Discord is connected; retrying 1 waiting delivery(ies) now" in caplog.text
    assert "is back" not in caplog.text


async def test_a_gateway_that_stays_down_leaves_the_back_off_alone(
    tmp_path: Path, idle_jump_clock: trio.testing.MockClock
) -> None:
    gateway = GatewayStatus(state="ready")
    first, second = await run_with_outage(tmp_path, gateway, [(1.0, "disconnected")])
    assert first < 1.0
    assert second >= BACKOFF * 0.9  # no wake-up: the job waited out its back-off
