"""Logging for journald and terminals: one line per event, level and component on each.

When stderr is connected to the journal (``$JOURNAL_STREAM`` names stderr's device and inode),
lines start with a syslog priority prefix (``<3>`` error ... ``<7>`` debug) so
``journalctl -p warning`` filters correctly, and carry no timestamp (journald adds one).
Otherwise lines are timestamped for humans.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """``<6>diswoot.gateway: ready as bot#1234`` (no timestamp; journald has it)."""

    def format(self, record: logging.LogRecord) -> str:
        message = _one_line(super().format(record))
        return f"<{syslog_priority(record.levelno)}>{record.name}: {message}"


class ConsoleFormatter(logging.Formatter):
    """``2026-11-25 16:40:00 INFO  diswoot.gateway: ready as bot#1234``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


def _one_line(text: str) -> str:
    # Tracebacks stay readable in a terminal but become one journal entry per event.
    return text.replace("\n", "\n    ") if "\n" in text else text


def stderr_is_journal(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` matches the device:inode of ``stream`` (stderr)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    stream = stream or sys.stderr
    try:
        st = os.fstat(stream.fileno())
        device, inode = (int(part) for part in value.split(":", 1))
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the daemon or a CLI command."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter = (
        JournalFormatter() if stderr_is_journal(stream) else ConsoleFormatter()
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("httpx", "httpcore", "hypercorn.access", "trio-websocket", "quart.serving"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
