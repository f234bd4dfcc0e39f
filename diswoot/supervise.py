"""Supervision of the daemon's long-lived tasks: a crash is logged and the task started again.

:func:`supervised` runs one task until it returns.  An unexpected exception is logged (its type
and where it was raised; the traceback only at debug level) and the task restarts after a
capped, jittered backoff.  Fatal errors (:func:`diswoot.errors.find_fatal`: exit 78) and
cancellation propagate unchanged, so shutdown and configuration errors still end the daemon.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from diswoot.bridge.backoff import retry_delay
from diswoot.errors import find_fatal

log = logging.getLogger("diswoot.supervise")

RESTART_BASE = 1.0
RESTART_CAP = 60.0
STABLE_AFTER = 60.0  # a run that lasted this long resets the backoff


def describe_error(exc: BaseException) -> str:
    """``KeyError at inbound.py:117``: the type and the innermost frame, never the message
    (which may quote input).  For an exception group, its first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}"


async def supervised(
    name: str,
    stop: trio.Event,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    reports_started: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``fn(*args)`` under supervision until it returns or ``stop`` is set.

    With ``reports_started``, ``fn`` takes a ``task_status`` and this task reports started
    once ``fn`` did the first time (or failed before it did: the daemon starts regardless).
    """
    announced = False
    attempt = 0

    def announce() -> None:
        nonlocal announced
        if not announced:
            announced = True
            task_status.started()

    while True:
        began = trio.current_time()
        try:
            if reports_started:
                async with trio.open_nursery() as nursery:
                    await nursery.start(fn, *args)
                    announce()
            else:
                announce()
                await fn(*args)
            return
        except Exception as exc:
            if find_fatal(exc) is not None:
                raise
            attempt = 1 if trio.current_time() - began >= STABLE_AFTER else attempt + 1
            delay = retry_delay(attempt, base=RESTART_BASE, cap=RESTART_CAP)
            log.error(
                "task %s failed (%s); restarting it in %.1f s", name, describe_error(exc), delay
            )
            log.debug("task %s failure", name, exc_info=exc)
        announce()
        with trio.move_on_after(delay):
            await stop.wait()
        if stop.is_set():
            return
