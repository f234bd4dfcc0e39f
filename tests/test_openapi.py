"""SpecValidator against the vendored Discord and Chatwoot OpenAPI documents."""

from __future__ import annotations

import json

import pytest

from diswoot.testing.openapi import SpecValidator


@pytest.fixture(scope="module")
def discord() -> SpecValidator:
    return SpecValidator.load("discord")


@pytest.fixture(scope="module")
def chatwoot() -> SpecValidator:
    return SpecValidator.load("chatwoot")


def test_load_is_cached() -> None:
    assert SpecValidator.load("discord") is SpecValidator.load("discord")
    with pytest.raises(ValueError, match="unknown spec"):
        SpecValidator.load("slack")


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/users/@me", "/users/@me"),
        ("GET", "/users/80351110224678912", "/users/{user_id}"),
        ("POST", "/users/@me/channels", "/users/@me/channels"),
        (
            "PATCH",
            "/webhooks/1200000000000000000/tok/messages/@original",
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
        ),
        (
            "PUT",
            "/channels/1/messages/2/reactions/%F0%9F%91%8D/@me",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me",
        ),
    ],
)
def test_literal_segments_win(
    discord: SpecValidator, method: str, path: str, template: str
) -> None:
    op = discord.match(method, path)
    assert op is not None
    assert op.template == template


def test_discord_good_requests(discord: SpecValidator) -> None:
    assert discord.check_request("GET", "/gateway/bot") == []
    assert (
        discord.check_request(
            "POST",
            "/channels/123/messages",
            json_body={
                "content": "hi",
                "allowed_mentions": {"parse": []},
                "nonce": "abc",
                "enforce_nonce": True,
                "embeds": [{"title": "t", "description": "d", "color": 0x7BB8F5}],
            },
        )
        == []
    )
    assert (
        discord.check_request("GET", "/channels/1/messages", query={"after": "0", "limit": "100"})
        == []
    )
    modal = {
        "type": 9,
        "data": {
            "custom_id": "ticket_modal",
            "title": "Open a ticket",
            "components": [
                {
                    "type": 18,
                    "label": "Subject",
                    "component": {"type": 4, "custom_id": "s", "style": 1},
                }
            ],
        },
    }
    assert discord.check_request("POST", "/interactions/1/tok/callback", json_body=modal) == []
    form = {"payload_json": json.dumps({"attachments": [{"id": "0", "filename": "a.png"}]})}
    assert discord.check_request("POST", "/channels/1/messages", form=form) == []


def test_discord_bad_requests(discord: SpecValidator) -> None:
    [bad_type] = discord.check_request("POST", "/channels/123/messages", json_body={"content": 5})
    assert "content" in bad_type
    assert "not of type" in bad_type
    assert discord.check_request("POST", "/no/such/route") == ["POST /no/such/route: unknown route"]
    assert "method not allowed" in discord.check_request("DELETE", "/gateway/bot")[0]
    assert "'channel_id'" in discord.check_request("GET", "/channels/abc/messages")[0]
    assert (
        "maximum" in discord.check_request("GET", "/channels/1/messages", query={"limit": "500"})[0]
    )
    assert (
        "not valid under any"
        in discord.check_request("POST", "/interactions/1/tok/callback", json_body={"type": 99})[0]
    )
    assert "required" in discord.check_request("POST", "/channels/1/messages")[0]
    bad_payload = {"payload_json": json.dumps({"attachments": [{"filename": "a.png"}]})}
    assert (
        "'id' is a required property"
        in discord.check_request("POST", "/channels/1/messages", form=bad_payload)[0]
    )
    assert (
        "not JSON"
        in discord.check_request("POST", "/channels/1/messages", form={"payload_json": "{"})[0]
    )


def test_discord_responses(discord: SpecValidator) -> None:
    assert discord.check_response("PUT", "/channels/1/messages/2/reactions/x/@me", 204, None) == []
    rate_limited = {
        "message": "You are being rate limited.",
        "retry_after": 1.5,
        "global": False,
        "code": 0,
    }
    assert discord.check_response("GET", "/users/@me", 429, rate_limited) == []
    assert (
        discord.check_response("GET", "/users/@me", 404, {"code": 10013, "message": "Unknown User"})
        == []
    )
    assert any(
        "retry_after" in v
        for v in discord.check_response("GET", "/users/@me", 429, {"code": 0, "message": "x"})
    )


def test_chatwoot(chatwoot: SpecValidator) -> None:
    op = chatwoot.match("GET", "/api/v1/accounts/1/contacts/search")
    assert op is not None
    assert op.template == "/api/v1/accounts/{account_id}/contacts/search"
    assert (
        chatwoot.check_request(
            "POST", "/api/v1/accounts/1/contacts", json_body={"name": "x", "inbox_id": 1}
        )
        == []
    )
    problems = chatwoot.check_request("POST", "/api/v1/accounts/1/contacts", json_body={"name": 5})
    assert any("'inbox_id' is a required property" in p for p in problems)
    assert any("name" in p and "not of type" in p for p in problems)
    assert chatwoot.match("GET", "/public/api/v1/inboxes/abc") is not None
