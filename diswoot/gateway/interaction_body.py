"""The fields of an HTTP interaction body (discord-api.md §2.2) that the bridge reads.

Run after the Ed25519 signature was checked, before the body reaches the interaction router:
a body Discord would never send gets a 400 naming the field instead of an error deep inside a
handler.  PING (type 1) needs nothing but its type.  The gateway checks INTERACTION_CREATE
with the same function (a malformed one is a rejected event).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diswoot import untrusted as check

PING = 1
TOKEN_MAX = 152133
"""The longest interaction token Discord's OpenAPI allows (``interaction_token``); it goes into
callback and webhook URLs percent-encoded, whatever its characters."""


def check_interaction(body: Mapping[str, Any]) -> int:
    """The interaction's type, after checking the fields used to answer it.

    Raises :class:`~diswoot.untrusted.FieldError` naming the first bad field.
    """
    kind = body.get("type")
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise check.FieldError("type", "an integer")
    if kind == PING:
        return kind
    check.snowflake(body.get("id"), "id")
    token = body.get("token")
    if not isinstance(token, str) or not 0 < len(token) <= TOKEN_MAX:
        raise check.FieldError("token", f"a string of 1 to {TOKEN_MAX} characters")
    check.opt_snowflake(body.get("application_id"), "application_id")
    check.opt_snowflake(body.get("channel_id"), "channel_id")
    context = body.get("context")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int)):
        raise check.FieldError("context", "an integer or null")
    member = check.opt_obj(body.get("member"), "member")
    if member.get("user") is not None:
        check.snowflake(check.obj(member["user"], "member.user").get("id"), "member.user.id")
    else:
        check.snowflake(check.obj(body.get("user"), "user").get("id"), "user.id")
    message = check.opt_obj(body.get("message"), "message")
    check.opt_snowflake(message.get("id"), "message.id")
    check.opt_snowflake(message.get("channel_id"), "message.channel_id")
    data = check.opt_obj(body.get("data"), "data")
    check.opt_str(data.get("name"), "data.name")
    check.opt_str(data.get("custom_id"), "data.custom_id")
    for i, option in enumerate(check.objects(data.get("options"), "data.options")):
        check.opt_str(option.get("name"), f"data.options[{i}].name")
    check.objects(data.get("components"), "data.components")
    return kind


__all__ = ["PING", "check_interaction"]
