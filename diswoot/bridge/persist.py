"""Waiting out the store's own failures.

A write refused for the store's own reason (a full disk, an I/O error, a locked database) says
nothing about the data: the caller keeps it in memory and :func:`until_stored` tries again with
a growing pause until the store takes it, or until the caller is cancelled (the shutdown's grace
period); the row left as it was is what the next start resumes from.  Any other failure
propagates at once.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from diswoot.bridge.backoff import retry_delay

LOCAL_STORE_ERRORS = (OSError, sqlite3.OperationalError)
"""The store's own trouble (disk, I/O, locks), never the data's."""
RETRY_BASE, RETRY_CAP = 0.1, 5.0

T = TypeVar("T")


async def until_stored(
    write: Callable[[], Awaitable[T]],
    *,
    what: str,
    log: logging.Logger,
    on_retry: Callable[[], None],
) -> T:
    """Run ``write`` until it does not fail with :data:`LOCAL_STORE_ERRORS`; its result.

    ``what`` says what it does ("store 2 DM(s)"): the first failure is logged as a warning, the
    eventual success as info; ``on_retry`` is called before each pause (a metric).
    """
    attempt = 0
    while True:
        try:
            result = await write()
        except LOCAL_STORE_ERRORS as exc:
            attempt += 1
            if attempt == 1:
                log.warning(
                    "could not %s (%s: %s); kept in memory and tried again until the store "
                    "works",
                    what,
                    type(exc).__name__,
                    exc,
                )
            on_retry()
            await trio.sleep(retry_delay(attempt, base=RETRY_BASE, cap=RETRY_CAP))
            continue
        if attempt:
            log.info("the store works again: did %s after %d tries", what, attempt + 1)
        return result
