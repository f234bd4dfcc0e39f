"""Environment files read exactly as systemd's ``EnvironmentFile=`` reads them.

A port of ``parse_env_file_internal()`` (systemd ``src/basic/env-file.c``) and of the clean-up
``exec_context_load_environment()`` applies (``strv_env_clean_with_callback``: names must be
``[A-Za-z_][A-Za-z0-9_]*``, the last assignment wins), so ``diswoot check --env-file`` and the
systemd unit give every variable the same value. :func:`lint_env_file` explains the lines both
ignore.  ``./.env`` is read with two additions of the original project's dotenv files
(``dotenv=True``): `` # note`` after a value is a comment, and ``export NAME=`` is ``NAME=``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# The character classes of systemd's string-util.h / escape.h.
_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_COMMENTS = "#;"
_SHELL_NEED_ESCAPE = '"\\`$'
_VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # env_name_is_valid(): bash's rule


class EnvFileError(ValueError):
    """The file cannot be used at all, and systemd refuses it too: a NUL byte, or invalid UTF-8
    in an assignment."""


@dataclass(frozen=True)
class Assignment:
    """One ``KEY=value`` as systemd's parser yields it (the key may still be an invalid name)."""

    line: int
    key: str
    value: str

    @property
    def valid(self) -> bool:
        return _VALID_NAME.fullmatch(self.key) is not None


@dataclass
class EnvFileScan:
    """Everything the parser found, with line numbers (1-based, counting ``\\n``)."""

    assignments: list[Assignment] = field(default_factory=list)
    lines_without_equals: list[int] = field(default_factory=list)
    continued_comments: list[int] = field(default_factory=list)  # comment lines ending in "\"


def scan_env_file(text: str, *, dotenv: bool = False) -> EnvFileScan:
    """Run systemd's state machine over ``text``; :class:`EnvFileError` for a NUL byte.

    With ``dotenv``, a ``#`` after whitespace that follows the value (``KEY=x  # note``,
    ``KEY="x" # note``, ``KEY= # note``) starts a comment, as in the original's ``.env``.
    """
    if "\0" in text:
        # read_full_stream_full() refuses embedded NULs (-EBADMSG) when, as here, the caller
        # relies on the terminating one: the unit fails with "Failed to load environment files"
        line = text.count("\n", 0, text.index("\0")) + 1
        raise EnvFileError(f"line {line}: a NUL byte (the file is not text)")
    scan = EnvFileScan()
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    key_ws: int | None = None  # where trailing whitespace of the key starts
    value_ws: int | None = None  # where trailing whitespace of an unquoted value starts
    spaced = False  # whitespace came right before this character (after the "=")
    line = start = 1

    def push(chomp: bool) -> None:
        k = "".join(key[:key_ws] if key_ws is not None else key)
        v = "".join(value[:value_ws] if chomp and value_ws is not None else value)
        scan.assignments.append(Assignment(start, k, v))
        key.clear()
        value.clear()

    for c in text:
        escaped = state == "value_escape"
        if dotenv and c == "#" and spaced and state in ("pre_value", "value"):
            push(chomp=state == "value")
            state = "comment"
        elif state == "pre_key":
            if c in _COMMENTS:
                state = "comment"
            elif c not in _WHITESPACE:
                state, key_ws, start = "key", None, line
                key.append(c)
        elif state == "key":
            if c in _NEWLINE:
                scan.lines_without_equals.append(start)
                state = "pre_key"
                key.clear()
            elif c == "=":
                state, value_ws = "pre_value", None
            else:
                if c not in _WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in _NEWLINE:
                push(chomp=False)
                state = "pre_key"
            elif c == "'":
                state = "single_quote"
            elif c == '"':
                state = "double_quote"
            elif c == "\\":
                state = "value_escape"
            elif c not in _WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in _NEWLINE:
                push(chomp=True)
                state = "pre_key"
            elif c == "\\":
                state, value_ws = "value_escape", None
            else:
                if c not in _WHITESPACE:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in _NEWLINE:  # an escaped newline is a line continuation
                value.append(c)
        elif state == "single_quote":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double_quote":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_quote_escape"
            else:
                value.append(c)
        elif state == "double_quote_escape":
            state = "double_quote"
            if c in _SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":  # any other escape keeps its backslash, like the shell
                value.append("\\" + c)
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        else:  # comment_escape: since v254 a backslash no longer continues a comment
            if c == "\n":
                scan.continued_comments.append(line)
            state = "pre_key" if c in _NEWLINE else "comment"
        spaced = c in " \t" and not escaped
        if c == "\n":
            line += 1
    if state == "key":
        scan.lines_without_equals.append(start)
    elif state not in ("pre_key", "comment", "comment_escape"):
        push(chomp=state == "value")
    return scan


def parse_dotenv(text: str, *, dotenv: bool = False) -> dict[str, str]:
    """The variables a unit with ``EnvironmentFile=`` holding ``text`` gets (later lines win);
    with ``dotenv``, as ``./.env`` is read (see the module)."""
    return _variables(scan_env_file(text, dotenv=dotenv), dotenv=dotenv)


def read_env_file(path: Path, *, dotenv: bool = False) -> dict[str, str]:
    """:func:`parse_dotenv` of a file; :class:`EnvFileError` where systemd would refuse it."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    try:
        scan = scan_env_file(text, dotenv=dotenv)
    except EnvFileError as exc:
        raise EnvFileError(f"{path}: {exc}") from None
    for a in scan.assignments:
        if _has_invalid_utf8(a.key) or _has_invalid_utf8(a.value):
            # systemd's check_utf8ness_and_warn() fails the whole file ("Failed to load
            # environment files"), so the unit would not start either
            raise EnvFileError(f"{path}: line {a.line}: invalid UTF-8 (save the file as UTF-8)")
    return _variables(scan, dotenv=dotenv)


def _variables(scan: EnvFileScan, *, dotenv: bool) -> dict[str, str]:
    variables: dict[str, str] = {}
    for a in scan.assignments:
        key = a.key
        if dotenv and key.startswith("export") and key[6:7] in (" ", "\t"):
            key = key[6:].strip()
        if _VALID_NAME.fullmatch(key):
            variables[key] = a.value
    return variables


def lint_env_file(text: str, *, dotenv: bool = False) -> list[str]:
    """Lines that systemd and diswoot ignore, or that older systemd versions read differently
    (with ``dotenv``: lines that diswoot ignores in ``./.env``)."""
    scan = scan_env_file(text, dotenv=dotenv)
    kept = _variables(scan, dotenv=dotenv)
    notes = []
    for a in scan.assignments:
        if a.valid or (dotenv and a.key[6:].strip() in kept and a.key.startswith("export")):
            continue
        if a.key.startswith("\ufeff"):
            notes.append(f"line {a.line}: the file starts with a byte-order mark, which makes the "
                         "first variable's name invalid: save the file as UTF-8 without BOM")
        elif a.key.startswith("export") and _VALID_NAME.fullmatch(a.key[6:].strip()):
            notes.append(f"line {a.line}: `export {a.key[6:].strip()}=` is ignored: environment "
                         "files have no `export`; write `NAME=value`")
        else:
            notes.append(f"line {a.line}: {a.key[:40]!r} is not a valid variable name; the line "
                         "is ignored")
    notes += [f"line {n}: no `=`; the line is ignored" for n in scan.lines_without_equals]
    notes += [
        f"line {n}: a comment ending in a backslash: systemd before v254 (Debian 12 has 252) "
        "also treats the next line as a comment; remove the backslash"
        for n in scan.continued_comments
    ]
    return notes


def _has_invalid_utf8(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


__all__ = [
    "Assignment",
    "EnvFileError",
    "EnvFileScan",
    "lint_env_file",
    "parse_dotenv",
    "read_env_file",
    "scan_env_file",
]
