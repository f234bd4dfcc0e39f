"""Branded Discord embeds, components and modals as plain JSON-ready dicts (pure).

Limits follow discord-api.md §5.4 (embeds, counted after trimming whitespace) and §3.3
(components and modals). Texts are truncated at grapheme boundaries with an ellipsis, never
rejected: a long agent-configured message must not make a notification fail with a 400.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from diswoot.bridge.chunking import is_grapheme_boundary
from diswoot.config import Config

# Embed limits (§5.4)
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
# Component limits (§3.3)
MODAL_TITLE_MAX = 45
LABEL_MAX = 45
LABEL_DESCRIPTION_MAX = 100
PLACEHOLDER_MAX = 100
BUTTON_LABEL_MAX = 80
CUSTOM_ID_MAX = 100

ACTION_ROW, BUTTON, TEXT_INPUT, LABEL = 1, 2, 4, 18
BUTTON_PRIMARY = 1
TEXT_INPUT_SHORT, TEXT_INPUT_PARAGRAPH = 1, 2
CSAT_BUTTON_PREFIX = "csat:"
CSAT_MODAL_PREFIX = "csat_modal:"
CSAT_RATING_ID = "rating"
CSAT_COMMENT_ID = "comment"
CSAT_COMMENT_MAX = 1000
TIMESTAMP_STYLES = frozenset("tTdDfFR")
_EMPTY = "\u200b"  # zero-width space: Discord rejects empty field names/values
_ELLIPSIS = "…"

STATUS_EMOJI = {"open": "🟢", "pending": "🟡", "snoozed": "💤", "resolved": "✅"}
ReopenReason = Literal["picked up", "unsnoozed", "reopened"]
_REOPEN_TITLES: dict[str, str] = {
    "picked up": "An agent picked up your ticket",
    "unsnoozed": "Your ticket is active again",
    "reopened": "Ticket reopened",
}


# ------------------------------------------------------------------------------- helpers
def truncate(text: str, limit: int) -> str:
    """``text`` trimmed, cut to at most ``limit`` characters at a grapheme boundary + "…"."""
    text = text.strip()
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = limit - len(_ELLIPSIS)
    while cut > 0 and not is_grapheme_boundary(text, cut):
        cut -= 1
    return text[:cut].rstrip() + _ELLIPSIS if cut > 0 else text[:limit]


def _aware(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("embeds need aware datetimes")
    return dt


def discord_timestamp(dt: datetime, style: str = "F") -> str:
    """Markdown that each client renders in its own locale: ``<t:1781690400:F>``."""
    if style not in TIMESTAMP_STYLES:
        raise ValueError(f"unknown timestamp style {style!r}")
    return f"<t:{math.floor(_aware(dt).timestamp())}:{style}>"


def branded(
    cfg: Config,
    *,
    title: str | None = None,
    description: str | None = None,
    color: int,
    fields: Sequence[tuple[str, str, bool]] = (),
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """An embed with the brand footer; every Discord limit is enforced by truncation.

    Towards the 6000-character total, title, footer and fields come first (trailing fields are
    dropped only if they alone exceed it); the description gets the remaining room.
    """
    embed: dict[str, Any] = {"color": color & 0xFFFFFF}
    title_text = truncate(title or "", TITLE_MAX)
    footer_text = truncate(cfg.footer_text, FOOTER_MAX)
    kept = [
        (
            truncate(name, FIELD_NAME_MAX) or _EMPTY,
            truncate(value, FIELD_VALUE_MAX) or _EMPTY,
            inline,
        )
        for name, value, inline in fields[:FIELDS_MAX]
    ]

    def used() -> int:
        return len(title_text) + len(footer_text) + sum(len(n) + len(v) for n, v, _ in kept)

    while kept and used() > EMBED_TOTAL_MAX:
        kept.pop()
    room = max(0, EMBED_TOTAL_MAX - used())
    description_text = truncate(description or "", min(DESCRIPTION_MAX, room))

    if title_text:
        embed["title"] = title_text
    if description_text:
        embed["description"] = description_text
    if kept:
        embed["fields"] = [{"name": n, "value": v, "inline": i} for n, v, i in kept]
    if footer_text:
        embed["footer"] = {"text": footer_text}
        if cfg.brand_icon_url:
            embed["footer"]["icon_url"] = cfg.brand_icon_url
    if timestamp is not None:
        embed["timestamp"] = _aware(timestamp).astimezone(UTC).isoformat()
    return embed


def embed_length(embed: Mapping[str, Any]) -> int:
    """Characters that count towards the 6000 total (title, description, fields, footer)."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    total += len(embed.get("footer", {}).get("text", ""))
    total += len(embed.get("author", {}).get("name", ""))
    return total


# ------------------------------------------------------------------------------- notices
def greeting_embed(cfg: Config, text: str) -> dict[str, Any]:
    """First-contact greeting (inbox greeting message, else GREETING_MESSAGE)."""
    return branded(
        cfg, title=f"👋 Welcome to {cfg.brand_name}", description=text, color=cfg.color_primary
    )


def out_of_office_embed(cfg: Config, text: str, next_opening: datetime | None) -> dict[str, Any]:
    """Outside working hours; shows when support opens again, in the user's own locale."""
    fields: list[tuple[str, str, bool]] = []
    if next_opening is not None:
        when = f"{discord_timestamp(next_opening, 'F')} ({discord_timestamp(next_opening, 'R')})"
        fields.append(("We'll be back", when, False))
    return branded(
        cfg,
        title="🌙 We're currently offline",
        description=text or cfg.outside_hours_fallback_message,
        color=cfg.color_warning,
        fields=fields,
    )


def resolved_embed(cfg: Config, text: str) -> dict[str, Any]:
    return branded(
        cfg,
        title="Ticket resolved",
        description=text or cfg.resolved_message,
        color=cfg.color_danger,
    )


def reopened_embed(cfg: Config, text: str, *, reason: ReopenReason) -> dict[str, Any]:
    """The conversation is active again: an agent picked it up, it was unsnoozed or reopened."""
    return branded(
        cfg,
        title=_REOPEN_TITLES[reason],
        description=text or cfg.reopened_message,
        color=cfg.color_success,
    )


def status_notice_embed(cfg: Config, status: str, text: str) -> dict[str, Any]:
    """A status change the user should know about (snoozed / pending)."""
    emoji = STATUS_EMOJI.get(status, "ℹ️")
    return branded(cfg, title=f"{emoji} Ticket {status}", description=text, color=cfg.color_warning)


def saved_for_later_embed(cfg: Config) -> dict[str, Any]:
    return branded(
        cfg,
        title="Message saved",
        description=(
            "Our support system is unreachable right now; your message is saved and will "
            "be delivered as soon as it is back."
        ),
        color=cfg.color_warning,
    )


def error_embed(cfg: Config, text: str) -> dict[str, Any]:
    return branded(cfg, description=f"❌  {text}", color=cfg.color_danger)


def warning_embed(cfg: Config, text: str) -> dict[str, Any]:
    return branded(cfg, description=f"⚠️  {text}", color=cfg.color_warning)


def success_embed(cfg: Config, title: str, text: str) -> dict[str, Any]:
    return branded(cfg, title=title, description=text, color=cfg.color_success)


def info_embed(cfg: Config, title: str, text: str) -> dict[str, Any]:
    return branded(cfg, title=title, description=text, color=cfg.color_info)


def status_embed(
    cfg: Config, *, status: str, conversation_id: int, last_activity: datetime | None
) -> dict[str, Any]:
    """The /status answer."""
    emoji = STATUS_EMOJI.get(status, "❔")
    activity = discord_timestamp(last_activity, "R") if last_activity is not None else "—"
    return branded(
        cfg,
        title="Your support ticket",
        color=cfg.color_info,
        fields=[
            ("Status", f"{emoji} {status.capitalize()}", True),
            ("Ticket", f"#{conversation_id}", True),
            ("Last activity", activity, True),
        ],
    )


# ------------------------------------------------------------------------------- CSAT
def _button(label: str, custom_id: str, *, disabled: bool = False) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": BUTTON,
        "style": BUTTON_PRIMARY,
        "label": truncate(label, BUTTON_LABEL_MAX) or "Rate",
        "custom_id": custom_id[:CUSTOM_ID_MAX],
    }
    if disabled:
        button["disabled"] = True
    return button


def csat_prompt(cfg: Config, conversation_id: int) -> dict[str, Any]:
    """Message payload: the CSAT question and a "Rate us" button (custom_id ``csat:{id}``)."""
    return {
        "embeds": [branded(cfg, description=cfg.csat_question, color=cfg.color_primary)],
        "components": [
            {
                "type": ACTION_ROW,
                "components": [
                    _button(cfg.csat_button_label, f"{CSAT_BUTTON_PREFIX}{conversation_id}")
                ],
            }
        ],
        "allowed_mentions": {"parse": []},
    }


def csat_modal(cfg: Config, conversation_id: int) -> dict[str, Any]:
    """``data`` of a type-9 (MODAL) interaction callback, in the Label layout (type 18)."""
    components: list[dict[str, Any]] = [
        {
            "type": LABEL,
            "label": truncate(cfg.csat_question, LABEL_MAX) or "Your rating",
            "description": "A number from 1 (poor) to 5 (excellent)",
            "component": {
                "type": TEXT_INPUT,
                "custom_id": CSAT_RATING_ID,
                "style": TEXT_INPUT_SHORT,
                "min_length": 1,
                "max_length": 1,
                "required": True,
                "placeholder": "1-5",
            },
        }
    ]
    if cfg.csat_comment_enabled:
        comment: dict[str, Any] = {
            "type": TEXT_INPUT,
            "custom_id": CSAT_COMMENT_ID,
            "style": TEXT_INPUT_PARAGRAPH,
            "max_length": CSAT_COMMENT_MAX,
            "required": False,
        }
        placeholder = truncate(cfg.csat_comment_placeholder, PLACEHOLDER_MAX)
        if placeholder:
            comment["placeholder"] = placeholder
        components.append({"type": LABEL, "label": "Comments", "component": comment})
    return {
        "custom_id": f"{CSAT_MODAL_PREFIX}{conversation_id}",
        "title": truncate(f"Rate {cfg.brand_name}", MODAL_TITLE_MAX) or "Rate us",
        "components": components,
    }


def parse_modal_values(data: Mapping[str, Any]) -> dict[str, str]:
    """``custom_id -> value`` of a MODAL_SUBMIT ``data``.

    Handles the Label layout (type 18, singular ``component``) and the legacy Action Row
    layout (type 1, plural ``components``); select menus give their ``values`` comma-joined.
    """
    values: dict[str, str] = {}

    def visit(component: Any) -> None:
        if not isinstance(component, Mapping):
            return
        custom_id = component.get("custom_id")
        if isinstance(custom_id, str):
            if isinstance(component.get("value"), str):
                values[custom_id] = component["value"]
            elif isinstance(component.get("values"), list):
                values[custom_id] = ",".join(str(v) for v in component["values"])
        visit(component.get("component"))
        children = component.get("components")
        if isinstance(children, list):
            for child in children:
                visit(child)

    for top in data.get("components") or []:
        visit(top)
    return values


def parse_csat(values: Mapping[str, str]) -> tuple[int, str | None] | None:
    """(rating 1-5, comment or None) from :func:`parse_modal_values`; None if invalid."""
    raw = values.get(CSAT_RATING_ID, "").strip()
    if len(raw) != 1 or raw not in "12345":
        return None
    comment = values.get(CSAT_COMMENT_ID, "").strip()
    return int(raw), (comment[:CSAT_COMMENT_MAX] or None)


def stars(rating: int) -> str:
    rating = max(0, min(5, rating))
    return "★" * rating + "☆" * (5 - rating)


def csat_rated_message(cfg: Config, rating: int, comment: str | None) -> dict[str, Any]:
    """Edit of the CSAT prompt after rating: the stars, the comment, the button disabled."""
    fields = [("Your rating", f"{stars(rating)} ({rating}/5)", True)]
    if comment:
        fields.append(("Your comment", comment, False))
    return {
        "embeds": [
            branded(cfg, title="Thanks for your feedback!", color=cfg.color_success, fields=fields)
        ],
        "components": [
            {
                "type": ACTION_ROW,
                "components": [_button(f"Rated {stars(rating)}", "csat:rated", disabled=True)],
            }
        ],
        "allowed_mentions": {"parse": []},
    }


__all__ = [
    "CSAT_BUTTON_PREFIX",
    "CSAT_COMMENT_ID",
    "CSAT_MODAL_PREFIX",
    "CSAT_RATING_ID",
    "EMBED_TOTAL_MAX",
    "STATUS_EMOJI",
    "ReopenReason",
    "branded",
    "csat_modal",
    "csat_prompt",
    "csat_rated_message",
    "discord_timestamp",
    "embed_length",
    "error_embed",
    "greeting_embed",
    "info_embed",
    "out_of_office_embed",
    "parse_csat",
    "parse_modal_values",
    "reopened_embed",
    "resolved_embed",
    "saved_for_later_embed",
    "stars",
    "status_embed",
    "status_notice_embed",
    "success_embed",
    "truncate",
    "warning_embed",
]
