"""SIGTERM/SIGINT that arrive before the trio loop listens for them.

``python -m diswoot`` installs these handlers before anything heavy is imported (the daemon's
modules take about a second): a signal then is remembered instead of killing the process with
143 or a ``KeyboardInterrupt`` traceback, and the service stops at once, exit 0, as it does
for a signal later in its start-up.  Only the standard library is imported here.
"""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def install() -> None:
    """Remember SIGTERM and SIGINT from now on (main thread only, as Python requires)."""
    signal.signal(signal.SIGTERM, _remember)
    signal.signal(signal.SIGINT, _remember)


def uninstall() -> None:
    """Python's own handling again (the commands that are not the daemon); a signal that
    came meanwhile is raised again, to be handled that way."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _received:
        signal.raise_signal(_received.pop(0))


def received() -> int | None:
    """The first signal remembered, if any."""
    return _received[0] if _received else None
