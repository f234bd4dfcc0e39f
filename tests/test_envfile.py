"""Env files read like systemd's EnvironmentFile= (src/basic/env-file.c), line by line.

``tests/data/tricky.env`` is also fed to a real systemd by ``.ci/systemd-e2e``, which checks that
a unit sees exactly what :func:`parse_dotenv` returns; here each value is spelled out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diswoot.envfile import (
    EnvFileError,
    lint_env_file,
    parse_dotenv,
    read_env_file,
    scan_env_file,
)

TRICKY = Path(__file__).resolve().parent / "data" / "tricky.env"

TRICKY_VALUES = {
    "T_PLAIN": "hello world",
    "T_TABS": "value with a trailing tab",
    "T_INLINE_HASH": "value # not a comment for systemd",
    "T_PASTED_COMMENT": "# Bot token from the Developer Portal",
    "T_HASH_NO_SPACE": "b#c",
    "T_DOUBLE": "double # quoted",
    "T_SINGLE": 'single "quoted" \\n raw \\ kept',
    "T_DOUBLE_ESCAPES": 'a "quote", a $dollar, a \\ backslash, a ` tick, \\n and \\z kept',
    "T_CONTINUED": "first second",
    "T_MULTILINE": "line one\nline two",
    "T_SINGLE_MULTILINE": "line one\nline two",
    "T_AFTER_QUOTE": "quotedtail",
    "T_HASH_AFTER_QUOTE": "quoted# comment?",
    "T_SPLICED": "xyz",
    "T_EMPTY": "",
    "T_SPACES_ONLY": "",
    "T_SPACES_AROUND": "value",
    "T_DUP": "second",
    "T_UNQUOTED_ESCAPES": "a b\\c#d",
    "T_ESCAPED_TRAILING_SPACE": "x ",
    "T_QUOTE_INSIDE": 'it\'s a "value"',
    "T_UNICODE": "✅ ünïcode 👍🏽",
    "T_SEMICOLON": "1;T_NOT_A_KEY=2",
    "T_EQUALS": "a=b=c",
    "T_CRLF": "crlf line",
    "T_CR": "cr line",
    "T_AFTER_CR": "after a bare CR",
    "T_LAST": "unterminated at the end of the file",
}


def test_the_tricky_file_reads_as_systemd_reads_it() -> None:
    assert read_env_file(TRICKY) == TRICKY_VALUES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n#B=2\n;C=3\n  # D=4\n", {"A": "1"}),
        ("A=x # y\n", {"A": "x # y"}),  # no inline comments
        ("A=   # comment\n", {"A": "# comment"}),
        ('A="x" # y\n', {"A": "x# y"}),  # text after a closing quote is appended
        ("A = 1\n", {"A": "1"}),
        ("export A=1\nA B=2\n9A=3\nA-B=4\n", {}),  # invalid names are dropped
        ("A=1\nA=2\n", {"A": "2"}),  # the last assignment wins
        ("A=first\\\nsecond\n", {"A": "firstsecond"}),
        ('A="x\\\ny"\n', {"A": "xy"}),  # continuation inside double quotes
        ("A='x\\\ny'\n", {"A": "x\\\ny"}),  # single quotes keep everything
        ('A="\\$HOME ${X}"\n', {"A": "$HOME ${X}"}),  # no expansion
        ("A=x\\\r\nB=y\n", {"A": "x", "B": "y"}),  # \r\n: the escape eats \r, \n ends it
        ("# comment \\\nA=1\n", {"A": "1"}),  # v254+: the backslash does not continue it
        ("A", {}),
        ("", {}),
    ],
)
def test_systemd_rules(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text) == expected


def test_a_nul_byte_refuses_the_file(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="line 2: a NUL byte"):
        parse_dotenv("A=1\nB=x\0y\n")
    path = tmp_path / "nul.env"
    path.write_bytes(b"A=1\n\0")
    with pytest.raises(EnvFileError, match=r"nul\.env: line 2: a NUL byte"):
        read_env_file(path)


def test_invalid_utf8_in_an_assignment_refuses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_bytes(b"# caf\xe9 in a comment is fine\nA=1\n")
    assert read_env_file(path) == {"A": "1"}
    path.write_bytes(b"A=1\nB=caf\xe9\n")
    with pytest.raises(EnvFileError, match="line 2: invalid UTF-8"):
        read_env_file(path)


def test_lint_names_every_ignored_line() -> None:
    notes = lint_env_file(TRICKY.read_text(encoding="utf-8"))
    assert len(notes) == 5, notes
    joined = "\n".join(notes)
    assert "line 1: the file starts with a byte-order mark" in joined
    assert "'T_INNER SPACE' is not a valid variable name" in joined
    assert "`export T_EXPORTED=` is ignored" in joined
    assert "'1T_DIGIT' is not a valid variable name" in joined
    assert "line 28: no `=`" in joined


def test_lint_of_a_dotenv_file_accepts_export() -> None:
    """./.env takes ``export NAME=`` (the original's dotenv did): nothing to point out."""
    notes = lint_env_file(TRICKY.read_text(encoding="utf-8"), dotenv=True)
    assert len(notes) == 4, notes
    assert "export" not in "\n".join(notes)


def test_lint_warns_about_comments_that_older_systemd_continues() -> None:
    notes = lint_env_file("# a comment \\\nA=1\n# fine\n")
    assert notes == [
        "line 1: a comment ending in a backslash: systemd before v254 (Debian 12 has 252) also "
        "treats the next line as a comment; remove the backslash"
    ]


def test_assignments_carry_their_line() -> None:
    scan = scan_env_file("# c\n\nA=1\nB='x\ny'\nC=3")
    assert [(a.line, a.key) for a in scan.assignments] == [(3, "A"), (4, "B"), (6, "C")]


def test_env_example_has_no_ignored_lines() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    assert lint_env_file(example.read_text(encoding="utf-8")) == []
