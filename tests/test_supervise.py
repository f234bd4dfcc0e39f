"""diswoot.supervise: crashed tasks restart with capped backoff; fatal errors and stop win."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio
import trio.testing

from diswoot.errors import FatalConfigurationError, find_fatal
from diswoot.gateway.runner import GatewayFatalError
from diswoot.supervise import RESTART_CAP, describe_error, supervised


class Flaky:
    """A task that fails its first ``failures`` runs (after ``runs_for`` seconds), then runs."""

    def __init__(self, failures: int, runs_for: float = 0.0) -> None:
        self.failures = failures
        self.runs_for = runs_for
        self.starts: list[float] = []

    async def wait_starts(self, count: int) -> None:
        while True:
            if len(self.starts) >= count:
                return
            await trio.sleep(0.5)

    async def __call__(self, stop: trio.Event) -> None:
        self.starts.append(trio.current_time())
        await trio.sleep(self.runs_for)
        if len(self.starts) <= self.failures:
            raise KeyError("boom")
        await stop.wait()


async def test_a_crashed_task_restarts_with_growing_capped_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    stop, task = trio.Event(), Flaky(failures=9)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervised, "flaky", stop, task, stop)
            await task.wait_starts(10)
            stop.set()
    gaps = [b - a for a, b in zip(task.starts, task.starts[1:], strict=False)]
    for attempt, gap in enumerate(gaps, start=1):
        nominal = min(RESTART_CAP, 2.0 ** (attempt - 1))
        assert nominal * 0.8 - 1e-6 <= gap <= min(RESTART_CAP, nominal * 1.2) + 1e-6
    assert max(gaps) <= RESTART_CAP + 1e-6
    failures = [r for r in caplog.records if r.name == "diswoot.supervise"
                and r.levelno == logging.ERROR]
    assert len(failures) == 9
    assert "task flaky failed (KeyError at test_supervise.py:" in failures[0].getMessage()
    assert "boom" not in failures[0].getMessage()


async def test_a_long_run_resets_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    stop, task = trio.Event(), Flaky(failures=4, runs_for=0.0)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervised, "flaky", stop, task, stop)
            await task.wait_starts(4)
            task.runs_for = 120.0  # the 4th run lasts long before failing
            await task.wait_starts(5)
            stop.set()
    assert task.starts[4] - task.starts[3] - 120.0 <= 1.2  # back to the first delay


async def test_stop_during_the_backoff_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop, task = trio.Event(), Flaky(failures=100)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervised, "flaky", stop, task, stop)
            await task.wait_starts(8)  # the backoff is now ~64 s
            stopped_at = trio.current_time()
            stop.set()
        assert trio.current_time() - stopped_at < 1


@pytest.mark.parametrize(
    "fatal", [FatalConfigurationError("bad token"), GatewayFatalError(4004)], ids=["78", "4004"]
)
async def test_fatal_errors_end_the_supervisor(
    autojump_clock: trio.testing.MockClock, fatal: Exception
) -> None:
    async def fails_fatally() -> None:
        async with trio.open_nursery() as nursery:  # even from inside a group
            nursery.start_soon(trio.sleep_forever)
            raise fatal

    with pytest.raises(ExceptionGroup) as info:  # propagated as raised: cli finds it there
        await supervised("gateway", trio.Event(), fails_fatally)
    assert find_fatal(info.value) is fatal


async def test_cancellation_is_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    task = Flaky(failures=0)
    with trio.move_on_after(5):
        await supervised("forever", trio.Event(), task, trio.Event())
    assert len(task.starts) == 1


async def test_readiness_is_reported_once_even_when_the_first_run_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = trio.Event()
    attempts: list[float] = []

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            raise OSError("not yet")
        task_status.started()
        await stop.wait()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(supervised, "server", stop, serve, reports_started=True))
            assert len(attempts) == 1  # the daemon starts although the first run failed
            while True:
                if len(attempts) >= 2:
                    break
                await trio.sleep(0.1)
            stop.set()


def test_describe_error_names_type_and_place_never_the_message() -> None:
    try:
        int("the customer's words")
    except ValueError as exc:
        text = describe_error(exc)
    assert text.startswith("ValueError at test_supervise.py:")
    assert "customer" not in text
    group = ExceptionGroup("g", [KeyError("secret")])
    assert describe_error(group) == "KeyError"
