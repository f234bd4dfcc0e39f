"""Sans-IO gateway pieces: zlib-stream, close codes, payloads, event parsing, backoff."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diswoot.gateway.events import (
    InteractionCreate,
    MessageCreate,
    MessageDelete,
    MessageUpdate,
    Presence,
    Ready,
    SessionState,
    TypingStart,
    parse_dispatch,
)
from diswoot.gateway.protocol import (
    FATAL_CLOSE_MESSAGES,
    NextAction,
    Op,
    PayloadTooLarge,
    ProtocolError,
    ZlibStreamDeflater,
    ZlibStreamInflater,
    close_action,
    connect_url,
    decode,
    encode,
    identify_payload,
    resume_payload,
)
from diswoot.gateway.runner import Backoff, GatewayFatalError, GatewaySettings

OWN_ID = "1100000000000000000"


# -- zlib-stream -------------------------------------------------------------------------------


def test_zlib_vector_split_across_three_frames() -> None:
    inflater = ZlibStreamInflater()
    assert inflater.feed(b"x\xda\xf2H\xcd\xc9") is None
    assert inflater.feed(b"\xc9W(\xcf/\xcaIQ\x04\x00\x00") is None  # suffix straddles frames
    assert inflater.feed(b"\x00\xff\xff") == "Hello world!"


def test_zlib_vector_single_frame() -> None:
    assert ZlibStreamInflater().feed(b"x\xdaJLD\x07\x00\x00\x00\x00\xff\xff") == "a" * 18


@given(st.lists(st.text(), min_size=1, max_size=8))
def test_zlib_stream_shares_one_context_per_connection(messages: list[str]) -> None:
    deflater, inflater = ZlibStreamDeflater(), ZlibStreamInflater()
    assert [inflater.feed(deflater.compress(m)) for m in messages] == messages


def test_zlib_corruption_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        ZlibStreamInflater().feed(b"not zlib at all\x00\x00\xff\xff")


# -- close codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, NextAction.RESUME),
        (1000, NextAction.RESUME),
        (1006, NextAction.RESUME),
        (4000, NextAction.RESUME),
        (4001, NextAction.RESUME),
        (4002, NextAction.RESUME),
        (4008, NextAction.RESUME),
        (4003, NextAction.IDENTIFY),
        (4005, NextAction.IDENTIFY),
        (4007, NextAction.IDENTIFY),
        (4009, NextAction.IDENTIFY),
        (4004, NextAction.FATAL),
        (4010, NextAction.FATAL),
        (4011, NextAction.FATAL),
        (4012, NextAction.FATAL),
        (4013, NextAction.FATAL),
        (4014, NextAction.FATAL),
    ],
)
def test_close_code_table(code: int | None, action: NextAction) -> None:
    assert close_action(code) is action


@given(st.integers(min_value=0, max_value=3999))
def test_codes_below_4000_resume(code: int) -> None:
    assert close_action(code) is NextAction.RESUME


@pytest.mark.parametrize("code", sorted(FATAL_CLOSE_MESSAGES))
def test_fatal_errors_carry_code_and_actionable_message(code: int) -> None:
    error = GatewayFatalError(code)
    assert error.code == code and str(error) == FATAL_CLOSE_MESSAGES[code]
    assert "test-token" not in str(error)


def test_4004_message_tells_what_to_do() -> None:
    assert str(GatewayFatalError(4004)) == (
        "the token was rejected: reset it in the Developer Portal and update DISCORD_TOKEN"
    )


# -- payloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "compress", "expected"),
    [
        (
            "wss://gateway.discord.gg",
            True,
            "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream",
        ),
        ("wss://gateway.discord.gg/", False, "wss://gateway.discord.gg/?v=10&encoding=json"),
        (
            "wss://gateway-us-east1-b.discord.gg/?v=9",
            False,
            "wss://gateway-us-east1-b.discord.gg/?v=10&encoding=json",
        ),
    ],
)
def test_connect_url(base: str, compress: bool, expected: str) -> None:
    assert connect_url(base, compress=compress) == expected


def test_identify_and_resume_payloads() -> None:
    presence = Presence("online", "DM me").to_payload()
    d = identify_payload("tok", 20480, presence)
    assert d == {
        "token": "tok",
        "intents": 20480,
        "properties": {"os": "linux", "browser": "diswoot", "device": "diswoot"},
        "presence": presence,
    }
    assert "presence" not in identify_payload("tok", 20480, None)
    assert resume_payload("tok", "abc", 7) == {"token": "tok", "session_id": "abc", "seq": 7}
    assert json.loads(encode(Op.RESUME, resume_payload("tok", "abc", 7)))["op"] == 6


def test_payloads_over_4096_bytes_are_refused() -> None:
    encode(Op.PRESENCE_UPDATE, "x" * 4000)
    with pytest.raises(PayloadTooLarge):
        encode(Op.PRESENCE_UPDATE, "é" * 2100)  # 4200 bytes in UTF-8


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"op": "1"}', b"\xff"])
def test_decode_rejects_bad_envelopes(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(text)


def test_presence_payload_and_validation() -> None:
    assert Presence("dnd", "busy").to_payload() == {
        "since": None,
        "status": "dnd",
        "afk": False,
        "activities": [{"name": "Custom Status", "type": 4, "state": "busy"}],
    }
    with pytest.raises(ValueError):
        Presence("offline", "x")
    with pytest.raises(ValueError):
        Presence("online", "x" * 600)


def test_settings_repr_hides_the_token() -> None:
    assert "s3cret" not in repr(GatewaySettings("s3cret"))
    assert GatewaySettings("t").intents == 20480


def test_session_clear_keeps_user_id() -> None:
    session = SessionState("s", 5, "wss://x", "42")
    assert session.resumable
    session.clear()
    assert session == SessionState(user_id="42") and not session.resumable


# -- events ------------------------------------------------------------------------------------


def message(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "10",
        "channel_id": "20",
        "content": "hi",
        "author": {"id": "30", "username": "alice"},
    }
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("data", "delivered"),
    [
        (message(channel_type=1), True),
        (message(channel_type=0, guild_id="5"), False),
        (message(channel_type=3), False),  # group DM
        (message(), True),  # no channel_type: no guild_id and not ephemeral
        (message(flags=64), False),  # our own ephemeral reply, possibly sent in a guild
        (message(guild_id="5"), False),
        (message(channel_type=1, author={"id": "31", "bot": True}), False),
        (message(channel_type=1, webhook_id="77"), False),
        (message(channel_type=1, author={"id": OWN_ID}), False),
        (message(channel_type=1, type=7), False),  # a system message (member join)
        (message(channel_type=1, type=19, referenced_message=None), True),  # reply, deleted orig
    ],
)
def test_message_filtering(data: dict[str, Any], delivered: bool) -> None:
    created = parse_dispatch("MESSAGE_CREATE", data, OWN_ID)
    updated = parse_dispatch("MESSAGE_UPDATE", data, OWN_ID)
    assert (created == MessageCreate(data)) is delivered
    assert (updated == MessageUpdate(data)) is delivered
    if delivered:
        assert isinstance(created, MessageCreate)
        assert (created.id, created.channel_id, created.author_id, created.content) == (
            "10",
            "20",
            data["author"]["id"],
            "hi",
        )


def test_other_dispatches() -> None:
    assert parse_dispatch("MESSAGE_DELETE", {"id": "1", "channel_id": "2"}, OWN_ID) == (
        MessageDelete("1", "2")
    )
    assert (
        parse_dispatch("MESSAGE_DELETE", {"id": "1", "channel_id": "2", "guild_id": "3"}, OWN_ID)
        is None
    )
    typing = {"channel_id": "2", "user_id": "9", "timestamp": 1700000000}
    assert parse_dispatch("TYPING_START", typing, OWN_ID) == TypingStart("2", "9", 1700000000)
    assert parse_dispatch("TYPING_START", {**typing, "guild_id": "3"}, OWN_ID) is None
    assert parse_dispatch("TYPING_START", {**typing, "user_id": OWN_ID}, OWN_ID) is None
    interaction = {"id": "5", "type": 2, "token": "tok", "user": {"id": "9"}}
    assert parse_dispatch("INTERACTION_CREATE", interaction, OWN_ID) == InteractionCreate(
        interaction
    )
    assert parse_dispatch("GUILD_CREATE", {"id": "5"}, OWN_ID) is None
    assert parse_dispatch("GUILD_CREATE", None, OWN_ID) is None


@pytest.mark.parametrize(("discriminator", "tag"), [("0", "diswoot"), ("1234", "diswoot#1234")])
def test_ready_tag(discriminator: str, tag: str) -> None:
    ready = Ready.from_payload(
        {
            "session_id": "s",
            "user": {"id": "1", "username": "diswoot", "discriminator": discriminator},
            "application": {"id": "99", "flags": 0},
        }
    )
    assert ready.tag == tag and ready.application_id == "99"


# -- backoff -----------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=60))
def test_backoff_is_jittered_exponential_and_capped(attempts: int) -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=60.0)
    for k in range(attempts):
        ceiling = min(60.0, 2.0**k)
        assert ceiling / 2 <= backoff.next() <= ceiling
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0
