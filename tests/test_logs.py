"""Logging: syslog priority prefixes for journald, readable lines otherwise."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from diswoot.logs import (
    ConsoleFormatter,
    JournalFormatter,
    setup_logging,
    stderr_is_journal,
    syslog_priority,
)


def record(level: int, msg: str, name: str = "diswoot.gateway") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],
)
def test_journal_lines_carry_the_syslog_priority(level: int, prefix: str) -> None:
    line = JournalFormatter().format(record(level, "ready as bot#1234"))
    assert line == f"{prefix}diswoot.gateway: ready as bot#1234"
    assert syslog_priority(level) == int(prefix[1])


def test_console_lines_are_timestamped_with_level_and_component() -> None:
    line = ConsoleFormatter().format(record(logging.WARNING, "slow"))
    assert " WARNING diswoot.gateway: slow" in line
    assert line[:4].isdigit()


def test_multiline_messages_stay_one_entry() -> None:
    line = JournalFormatter().format(record(logging.ERROR, "first\nsecond"))
    assert line == "<3>diswoot.gateway: first\n    second"


def test_journal_detection_matches_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        assert stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal(stream, {})
        assert not stderr_is_journal(stream, {"JOURNAL_STREAM": "garbage"})


def test_setup_logging_uses_the_journal_format_under_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "stderr", "w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        setup_logging("INFO", stream)
        logging.getLogger("diswoot.test").warning("careful")
        logging.getLogger("diswoot.test").debug("hidden")
        stream.seek(0)
        assert stream.read() == "<4>diswoot.test: careful\n"
    buffer = io.StringIO()
    setup_logging("DEBUG", buffer)
    logging.getLogger("diswoot.test").debug("shown")
    assert "DEBUG   diswoot.test: shown" in buffer.getvalue()
    setup_logging("WARNING", io.StringIO())
