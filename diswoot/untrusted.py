"""Untrusted JSON (webhooks, interactions, gateway events): bounded parsing, and field checks
that name the field.

:func:`parse_json` refuses what ``json.loads`` accepts but the bridge must not store or forward
(nesting deeper than :data:`MAX_DEPTH`, NaN/Infinity, unpaired surrogates).  The field helpers
return a value of the expected type or raise :class:`FieldError`, whose message names the field
(``field 'conversation.id' must be an integer``); the webhook app answers it with a 400, the
gateway rejects the event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from diswoot.gateway.shapes import is_snowflake

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted (Chatwoot's bodies nest about 8 levels)."""
MAX_ID = 2**63 - 1
"""Largest id the store can hold (SQLite INTEGER)."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""In UTF-8 JSON a surrogate can only be written as an escape: without one, no string can
hold one (the check of every string is skipped)."""
class BodyError(ValueError):
    """The body is not JSON the bridge accepts; the message says why (no content)."""


class FieldError(ValueError):
    """A field is missing or has the wrong type; the message names it."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"field {field!r} must be {expected}")
        self.field = field


def parse_json(raw: bytes) -> Any:
    """``json.loads`` for untrusted bytes; :class:`BodyError` for anything refused."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise BodyError(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise BodyError("body is not valid JSON") from None
    _check_tree(value, texts=_SURROGATE_ESCAPE.search(raw) is not None)
    return value


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _check_tree(value: Any, *, texts: bool = True) -> None:
    """Nesting depth of every container and (``texts``) validity of every string, without
    recursion."""
    if isinstance(value, str):
        if texts:
            _check_text(value)
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if depth > MAX_DEPTH:
            raise BodyError(f"body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if texts:
                for key in node:
                    _check_text(key)
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        for item in children:
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
            elif texts and isinstance(item, str):
                _check_text(item)


def _check_text(text: str) -> None:
    if _SURROGATE.search(text):
        raise BodyError("body contains an unpaired UTF-16 surrogate (not valid Unicode)")


# ---------------------------------------------------------------------- field checks


def obj(value: Any, field: str) -> Mapping[str, Any]:
    """A required JSON object."""
    if not isinstance(value, Mapping):
        raise FieldError(field, "an object")
    return value


def opt_obj(value: Any, field: str) -> Mapping[str, Any]:
    """An object, or ``{}`` for null/missing."""
    return {} if value is None else obj(value, field)


def ident(value: Any, field: str) -> int:
    """A required positive integer id that fits the store."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, "an integer")
    if not 0 < value <= MAX_ID:
        raise FieldError(field, f"an integer between 1 and {MAX_ID}")
    return value


def opt_ident(value: Any, field: str) -> int | None:
    return None if value is None else ident(value, field)


def size(value: Any, field: str) -> int | None:
    """A byte count (non-negative integer), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise FieldError(field, "a non-negative integer")
    return value


def string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise FieldError(field, "a string")
    return value


def opt_str(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FieldError(field, "a string or null")
    return value


def opt_bool(value: Any, field: str) -> bool:
    """A boolean; null/missing is False."""
    if value is not None and not isinstance(value, bool):
        raise FieldError(field, "a boolean")
    return bool(value)


def objects(value: Any, field: str) -> list[Mapping[str, Any]]:
    """A list of objects (each named ``field[i]``); null/missing is ``[]``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(field, "a list")
    return [obj(item, f"{field}[{i}]") for i, item in enumerate(value)]


def snowflake(value: Any, field: str) -> str:
    """A Discord id: a string of digits that fits in 64 bits (the gateway's own check)."""
    if not is_snowflake(value):
        raise FieldError(field, "a Discord id (a string of digits)")
    return value


def opt_snowflake(value: Any, field: str) -> str | None:
    return None if value is None else snowflake(value, field)


__all__ = [
    "MAX_DEPTH",
    "BodyError",
    "FieldError",
    "ident",
    "obj",
    "objects",
    "opt_bool",
    "opt_ident",
    "opt_obj",
    "opt_snowflake",
    "opt_str",
    "parse_json",
    "size",
    "snowflake",
    "string",
]
