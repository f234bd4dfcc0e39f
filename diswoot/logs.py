"""Logging for journald and terminals: one line per event, level and component on each.

When stderr is connected to the journal (``$JOURNAL_STREAM`` names stderr's device and inode),
lines start with a syslog priority prefix (``<3>`` error ... ``<7>`` debug) so
``journalctl -p warning`` filters correctly, and carry no timestamp (journald adds one).
Otherwise lines are timestamped for humans.  Every line is redacted (:class:`RedactingFilter`):
the configured secrets and the tokens in interaction, webhook and ``/webhook/<token>`` URLs
become ``[redacted]``, whichever library logs them and at any level.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import quote

from diswoot.config import SECRET_VARIABLES, Config

REDACTED = "[redacted]"
_TOKEN_IN_PATH = re.compile(
    r"(/interactions/[0-9]+/|/webhooks/[0-9]+/|/webhook/)[^/\s?#\"'<>]+", re.IGNORECASE
)
"""``/interactions/{id}/{token}/callback``, ``/webhooks/{app}/{token}``, ``/webhook/{token}``."""

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


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, exception and stack text without secrets or URL tokens.

    Install it on a handler: it sees every record the handler writes, whichever logger (ours,
    httpx, httpcore, hypercorn, quart) made it.  The record is changed in place, so handlers
    after this one get the redacted text too.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        variants = {v for s in secrets if s for v in (s, quote(s, safe=""), quote(s))}
        ordered = sorted(variants, key=len, reverse=True)  # the longest form first
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        text = _TOKEN_IN_PATH.sub(lambda m: m.group(1) + REDACTED, text)
        return self._secrets.sub(REDACTED, text) if self._secrets else text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad format arguments: logging reports them; keep the raw text
            message = str(record.msg)
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTIONS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_EXCEPTIONS = logging.Formatter()


def config_secrets(cfg: Config) -> list[str]:
    """The secret values of ``cfg`` (DISCORD_TOKEN, CHATWOOT_API_TOKEN, ...), set or not."""
    return [str(getattr(cfg, name.lower())) for name in sorted(SECRET_VARIABLES)]


def setup_logging(
    level: str = "INFO", stream: TextIO | None = None, *, secrets: Iterable[str] = ()
) -> None:
    """Configure the root logger once for the daemon or a CLI command.

    ``secrets`` are redacted from every line (see :func:`config_secrets`).
    """
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter = (
        JournalFormatter() if stderr_is_journal(stream) else ConsoleFormatter()
    )
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("httpx", "httpcore", "hypercorn.access", "trio-websocket", "quart.serving"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
