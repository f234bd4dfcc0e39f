"""Embed, component and modal builders: branding, Discord limits, CSAT round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diswoot.bridge import embeds as E
from diswoot.config import test_config

CFG = test_config(brand_name="Acme Help", brand_icon_url="https://cdn.example/icon.png")
WHEN = datetime(2026, 6, 17, 9, 0, tzinfo=UTC)  # 1781686800


def assert_embed_limits(embed: dict[str, Any]) -> None:
    assert len(embed.get("title", "")) <= 256
    assert len(embed.get("description", "")) <= 4096
    assert len(embed.get("fields", [])) <= 25
    for f in embed.get("fields", []):
        assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
    assert 0 < len(embed["footer"]["text"]) <= 2048
    assert E.embed_length(embed) <= 6000
    assert 0 <= embed["color"] <= 0xFFFFFF
    json.dumps(embed)  # JSON-ready


# --------------------------------------------------------------------------- basics
def test_discord_timestamp() -> None:
    assert E.discord_timestamp(WHEN) == "<t:1781686800:F>"
    assert E.discord_timestamp(WHEN, "R") == "<t:1781686800:R>"
    plus2 = timezone(timedelta(hours=2))
    assert E.discord_timestamp(datetime(2026, 6, 17, 11, 0, tzinfo=plus2), "t") == (
        "<t:1781686800:t>"
    )
    with pytest.raises(ValueError):
        E.discord_timestamp(WHEN, "X")
    with pytest.raises(ValueError):
        E.discord_timestamp(datetime(2026, 6, 17))


def test_branded_footer_timestamp_and_fields() -> None:
    embed = E.branded(
        CFG,
        title="  Title  ",
        description="Body",
        color=0x123456,
        fields=[("Name", "Value", True), ("", "   ", False)],
        timestamp=datetime(2026, 6, 17, 11, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert embed == {
        "color": 0x123456,
        "title": "Title",
        "description": "Body",
        "fields": [
            {"name": "Name", "value": "Value", "inline": True},
            {"name": "\u200b", "value": "\u200b", "inline": False},
        ],
        "footer": {"text": "Acme Help", "icon_url": "https://cdn.example/icon.png"},
        "timestamp": "2026-06-17T09:00:00+00:00",
    }


def test_footer_text_override_and_no_icon() -> None:
    cfg = test_config(brand_footer_text="Acme Support • 24/7")
    embed = E.branded(cfg, description="x", color=1)
    assert embed["footer"] == {"text": "Acme Support • 24/7"}
    assert "title" not in embed and "timestamp" not in embed and "fields" not in embed


def test_truncate_is_grapheme_safe() -> None:
    assert E.truncate("  hello  ", 10) == "hello"
    assert E.truncate("hello world", 8) == "hello w…"
    assert E.truncate("ab👨\u200d👩\u200d👧cd", 6) == "ab…"
    assert E.truncate("abc", 0) == ""
    assert len(E.truncate("x" * 5000, 4096)) == 4096


def test_limits_are_enforced_by_truncation() -> None:
    embed = E.branded(
        test_config(brand_footer_text="F" * 3000),
        title="T" * 300,
        description="D" * 5000,
        color=0x1FFFFFF,
        fields=[("N" * 300, "V" * 2000, False)] * 30,
    )
    assert_embed_limits(embed)
    assert embed["title"].endswith("…") and len(embed["title"]) == 256
    assert len(embed["footer"]["text"]) == 2048
    assert len(embed["fields"]) == 2  # 256 + 2048 + 2 * 1280 leaves 1136 for the description
    assert len(embed["description"]) == 1136 and E.embed_length(embed) == 6000


def test_description_shrinks_to_fit_the_total() -> None:
    embed = E.branded(CFG, description="D" * 4096, color=1, fields=[("N", "V" * 1000, False)] * 3)
    assert_embed_limits(embed)
    assert E.embed_length(embed) == 6000
    assert len(embed["fields"]) == 3


@settings(max_examples=150)
@given(
    title=st.text(max_size=400),
    description=st.text(max_size=6000),
    fields=st.lists(
        st.tuples(st.text(max_size=300), st.text(max_size=1200), st.booleans()), max_size=30
    ),
    footer=st.text(min_size=1, max_size=2100).filter(str.strip),
)
def test_any_input_respects_the_limits(
    title: str, description: str, fields: list[tuple[str, str, bool]], footer: str
) -> None:
    embed = E.branded(
        test_config(brand_footer_text=footer),
        title=title,
        description=description,
        color=0xABCDEF,
        fields=fields,
    )
    assert_embed_limits(embed)


# --------------------------------------------------------------------------- notices
def test_notice_embeds_use_the_palette_and_texts() -> None:
    assert E.greeting_embed(CFG, "Hi!")["color"] == CFG.color_primary
    assert E.greeting_embed(CFG, "Hi!")["description"] == "Hi!"
    assert E.resolved_embed(CFG, "")["description"] == CFG.resolved_message
    assert E.resolved_embed(CFG, "done")["color"] == CFG.color_danger
    assert E.status_notice_embed(CFG, "snoozed", "zz")["color"] == CFG.color_warning
    assert "snoozed" in E.status_notice_embed(CFG, "snoozed", "zz")["title"]
    assert E.error_embed(CFG, "boom")["color"] == CFG.color_danger
    assert E.warning_embed(CFG, "hm")["color"] == CFG.color_warning
    assert E.success_embed(CFG, "OK", "fine")["color"] == CFG.color_success
    assert E.info_embed(CFG, "Help", "text")["color"] == CFG.color_info
    saved = E.saved_for_later_embed(CFG)
    assert "saved" in saved["description"] and "delivered" in saved["description"]


@pytest.mark.parametrize("reason", ["picked up", "unsnoozed", "reopened"])
def test_reopened_embed_titles_differ_by_reason(reason: E.ReopenReason) -> None:
    embed = E.reopened_embed(CFG, "", reason=reason)
    assert embed["description"] == CFG.reopened_message
    assert embed["color"] == CFG.color_success
    titles = {
        E.reopened_embed(CFG, "x", reason=r)["title"]
        for r in ("picked up", "unsnoozed", "reopened")
    }
    assert len(titles) == 3


def test_out_of_office_shows_absolute_and_relative_times() -> None:
    embed = E.out_of_office_embed(CFG, "We are closed.", WHEN)
    assert embed["description"] == "We are closed."
    [field] = embed["fields"]
    assert "<t:1781686800:F>" in field["value"] and "<t:1781686800:R>" in field["value"]
    never = E.out_of_office_embed(CFG, "", None)
    assert "fields" not in never
    assert never["description"] == CFG.outside_hours_fallback_message


def test_status_embed() -> None:
    embed = E.status_embed(CFG, status="pending", conversation_id=42, last_activity=WHEN)
    values = {f["name"]: f["value"] for f in embed["fields"]}
    assert values == {"Status": "🟡 Pending", "Ticket": "#42", "Last activity": "<t:1781686800:R>"}
    unknown = E.status_embed(CFG, status="weird", conversation_id=1, last_activity=None)
    assert {f["name"]: f["value"] for f in unknown["fields"]}["Last activity"] == "—"


# --------------------------------------------------------------------------- CSAT
def test_csat_prompt_has_one_button() -> None:
    payload = E.csat_prompt(CFG, 123)
    [embed] = payload["embeds"]
    assert embed["description"] == CFG.csat_question
    assert payload["components"] == [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 1, "label": CFG.csat_button_label, "custom_id": "csat:123"}
            ],
        }
    ]


def test_csat_modal_label_layout_with_comment() -> None:
    modal = E.csat_modal(CFG, 123)
    assert modal["custom_id"] == "csat_modal:123"
    assert 0 < len(modal["title"]) <= 45
    rating, comment = modal["components"]
    assert rating["type"] == 18 and len(rating["label"]) <= 45
    assert len(rating.get("description", "")) <= 100
    assert rating["component"] == {
        "type": 4,
        "custom_id": "rating",
        "style": 1,
        "min_length": 1,
        "max_length": 1,
        "required": True,
        "placeholder": "1-5",
    }
    assert "label" not in rating["component"]  # not allowed inside a Label
    assert comment["type"] == 18
    assert comment["component"] == {
        "type": 4,
        "custom_id": "comment",
        "style": 2,
        "max_length": 1000,
        "required": False,
        "placeholder": CFG.csat_comment_placeholder,
    }


def test_csat_modal_without_comment_and_long_texts() -> None:
    cfg = test_config(csat_comment_enabled=False, brand_name="B" * 80, csat_question="Q" * 80)
    modal = E.csat_modal(cfg, 9)
    assert len(modal["components"]) == 1
    assert len(modal["title"]) <= 45
    assert len(modal["components"][0]["label"]) <= 45


def test_parse_modal_values_label_layout() -> None:
    data = {
        "custom_id": "csat_modal:123",
        "components": [
            {
                "type": 18,
                "id": 1,
                "component": {"type": 4, "id": 2, "custom_id": "rating", "value": "4"},
            },
            {
                "type": 18,
                "id": 3,
                "component": {"type": 4, "id": 4, "custom_id": "comment", "value": "great"},
            },
            {"type": 10, "id": 5, "content": "just text"},
        ],
    }
    assert E.parse_modal_values(data) == {"rating": "4", "comment": "great"}


def test_parse_modal_values_legacy_layout_and_selects() -> None:
    data = {
        "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "rating", "value": "5"}]},
            {"type": 1, "components": [{"type": 4, "custom_id": "comment", "value": ""}]},
            {"type": 18, "component": {"type": 3, "custom_id": "topic", "values": ["a", "b"]}},
            "junk",
            {"type": 1, "components": None},
        ]
    }
    assert E.parse_modal_values(data) == {"rating": "5", "comment": "", "topic": "a,b"}
    assert E.parse_modal_values({}) == {}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"rating": "4", "comment": " thanks "}, (4, "thanks")),
        ({"rating": " 1 "}, (1, None)),
        ({"rating": "5", "comment": "   "}, (5, None)),
        ({"rating": "0"}, None),
        ({"rating": "6"}, None),
        ({"rating": "٣"}, None),
        ({"rating": "45"}, None),
        ({}, None),
    ],
)
def test_parse_csat(values: dict[str, str], expected: tuple[int, str | None] | None) -> None:
    assert E.parse_csat(values) == expected


def test_modal_round_trip() -> None:
    """What Discord echoes back for our modal parses to the values the user typed."""
    modal = E.csat_modal(CFG, 7)
    submitted = {
        "custom_id": modal["custom_id"],
        "components": [
            {"type": c["type"], "component": {**c["component"], "value": v}}
            for c, v in zip(modal["components"], ["3", "ok"], strict=True)
        ],
    }
    assert E.parse_csat(E.parse_modal_values(submitted)) == (3, "ok")


def test_csat_rated_message_disables_the_button() -> None:
    payload = E.csat_rated_message(CFG, 4, "nice")
    [embed] = payload["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Your rating"] == "★★★★☆ (4/5)"
    assert fields["Your comment"] == "nice"
    [button] = payload["components"][0]["components"]
    assert button["disabled"] is True and button["type"] == 2 and button["custom_id"]
    no_comment = E.csat_rated_message(CFG, 5, None)
    assert len(no_comment["embeds"][0]["fields"]) == 1
    assert_embed_limits(embed)


def test_stars() -> None:
    assert E.stars(0) == "☆☆☆☆☆"
    assert E.stars(5) == "★★★★★"
    assert E.stars(9) == "★★★★★"
