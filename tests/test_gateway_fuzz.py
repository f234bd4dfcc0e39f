"""Fuzzing the gateway path with mutated and random dispatches.

Fast: thousands of mutated dispatches through the sans-IO GatewaySession (the parser and the
seq rule).  End to end: batches of them through the fake gateway into the real daemon, which
must keep running, acknowledge every one, never reconnect, and still deliver a valid DM once.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diswoot.gateway.events import (
    REJECT_REASONS,
    ROUTED_EVENTS,
    GatewayStatus,
    InteractionCreate,
    MessageCreate,
    MessageDelete,
    MessageUpdate,
    Rejected,
    SessionState,
    TypingStart,
)
from diswoot.gateway.session import Credentials, Deliver, End, GatewaySession
from diswoot.gateway.shapes import is_snowflake
from diswoot.testing.fake_gateway import FakeGateway
from diswoot.testing.harness import bridge_world

BOT = "1100000000000000000"
STRANGER = "90000000000000001"  # the author of the garbage: never the user of the valid DM
UID = "80351110224678912"
CHANNEL = "1290000000000000000"
SECRET = "SECRET-WORDS"  # message content: must never show up in a rejection

MESSAGE = {
    "id": "1300000000000000001",
    "channel_id": CHANNEL,
    "channel_type": 1,
    "author": {"id": STRANGER, "username": "mallory", "bot": False},
    "content": SECRET,
    "type": 19,
    "flags": 1 << 14,
    "timestamp": "2026-08-01T12:00:00.000000+00:00",
    "edited_timestamp": "2026-08-01T12:01:00.000000+00:00",
    "attachments": [{"id": "1300000000000000002", "filename": "a.png", "size": 10,
                     "url": "https://cdn.discordapp.com/a.png", "content_type": "image/png"}],
    "embeds": [],
    "sticker_items": [{"id": "1", "name": "wave", "format_type": 1}],
    "message_reference": {"type": 1, "message_id": "1300000000000000000"},
    "referenced_message": None,
    "message_snapshots": [{"message": {"content": SECRET, "attachments": [], "type": 0}}],
    "poll": {"question": {"text": SECRET}, "answers": [{"poll_media": {"text": SECRET}}]},
}
TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    ("MESSAGE_CREATE", MESSAGE),
    ("MESSAGE_UPDATE", MESSAGE),
    ("MESSAGE_DELETE", {"id": "1300000000000000001", "channel_id": CHANNEL}),
    ("TYPING_START", {"channel_id": CHANNEL, "user_id": STRANGER, "timestamp": 1700000000}),
    ("INTERACTION_CREATE", {"id": "1300000000000000100", "application_id": "12", "type": 3,
                            "token": "aW50", "channel_id": CHANNEL,
                            "user": {"id": STRANGER, "username": "mallory"},
                            "data": {"custom_id": "csat:1:5", "component_type": 2}}),
]
KEYS = ["id", "channel_id", "author", "content", "type", "flags", "channel_type", "guild_id",
        "webhook_id", "attachments", "message_snapshots", "poll", "referenced_message",
        "message_reference", "sticker_items", "bot", "token", "user_id", "timestamp", "url"]

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "18446744073709551616", "1" * 25, "١٢٣", "wss://x", "💥"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with 1-4 random edits: a key dropped, a value replaced or wrapped, a key added."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(value)))
        edit = draw(st.sampled_from(["drop", "replace", "wrap", "add"]))
        node = value
        for step in path:
            node = node[step]
        if edit == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(KEYS))] = draw(junk)
            continue
        if not path:
            value = None if edit == "drop" else [value] if edit == "wrap" else draw(junk)
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        if edit == "drop":
            del parent[path[-1]]
        elif edit == "wrap":
            parent[path[-1]] = draw(st.sampled_from([[node], {"value": node}, str(node)]))
        else:
            parent[path[-1]] = draw(junk)
    return value


@st.composite
def garbage(draw: st.DrawFn) -> tuple[Any, Any]:
    """A (t, d) pair: a mutated dispatch of a routed type, sometimes under another name (not
    READY or RESUMED, which only a handshake brings)."""
    name, data = draw(st.sampled_from(TEMPLATES))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        names = st.sampled_from([t for t, _ in TEMPLATES] + ["GUILD_CREATE"])
        return draw(junk | names), draw(mutated(data))
    return name, draw(mutated(data))


def ready_session() -> GatewaySession:
    session = GatewaySession(SessionState(), GatewayStatus(), Credentials("tok", 20480, False))
    session.receive({"op": 10, "d": {"heartbeat_interval": 41250}}, 0.0)
    ready = {"session_id": "abc", "user": {"id": BOT}, "resume_gateway_url": "wss://r"}
    for action in session.receive({"op": 0, "t": "READY", "s": 1, "d": ready}, 0.0):
        if isinstance(action, Deliver):
            session.acknowledge(action.seq)
    return session


def check_event(event: object) -> None:
    """What the bridge may rely on for each event type."""
    match event:
        case MessageCreate() | MessageUpdate():
            assert is_snowflake(event.id) and is_snowflake(event.channel_id)
            assert is_snowflake(event.author_id) and event.author_id != BOT
            assert isinstance(event.content, str)
        case MessageDelete():
            assert is_snowflake(event.id) and is_snowflake(event.channel_id)
        case TypingStart():
            assert is_snowflake(event.user_id) and isinstance(event.timestamp, int)
        case InteractionCreate():
            assert is_snowflake(event.data["id"]) and isinstance(event.data["token"], str)
        case Rejected():
            assert event.reason in REJECT_REASONS
            assert event.type in ROUTED_EVENTS or event.type == "other"
            assert event.id is None or is_snowflake(event.id)
            assert SECRET not in event.detail
        case _:
            raise AssertionError(f"unexpected event {type(event).__name__}")


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage(), st.integers(min_value=2, max_value=2**62))
def test_any_dispatch_is_parsed_rejected_or_ignored_and_always_acknowledged(
    dispatch: tuple[Any, Any], seq: int
) -> None:
    t, d = dispatch
    session = ready_session()
    actions = session.receive({"op": 0, "t": t, "s": seq, "d": d}, 1.0)
    assert not any(isinstance(a, End) for a in actions)
    for action in actions:
        assert isinstance(action, Deliver) and action.seq == seq
        check_event(action.event)
        session.acknowledge(action.seq)
    assert session.state.seq == seq
    assert session.handshake_done and session.state.session_id == "abc"


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200) | junk.map(repr))
def test_random_frames_never_raise(frame: str | bytes) -> None:
    session = ready_session()
    for action in session.receive_frame(frame, 1.0):
        if isinstance(action, Deliver):
            check_event(action.event)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(garbage(), min_size=60, max_size=60))
async def test_the_daemon_survives_garbage_and_still_delivers_a_dm_once(
    tmp_path_factory: Any, batch: list[tuple[Any, Any]]
) -> None:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    with trio.fail_after(60):
        async with bridge_world(tmp_path) as world:
            fake = cast(FakeGateway, world.discord.gateway)
            await fake.wait_ready()
            world.discord.add_user(UID, "alice")
            fake.dispatch("MESSAGE_CREATE", ["always", "one", "malformed"])
            for t, d in batch:
                fake.dispatch(t, d)
            sent = world.discord.user_sends(UID, "after the garbage")

            def arrived() -> list[dict[str, Any]]:
                return [m for m in world.chatwoot.messages.values()
                        if m.get("source_id") == sent["id"]]

            await world.wait_for(arrived, timeout=45)
            assert await world.acknowledged_seq() == fake.last_seq  # every dispatch
            assert len(arrived()) == 1
            assert fake.connections == 1 and fake.resumes == [] and fake.close_codes == []
            counted = world.daemon.ctx.metrics.events_rejected.labels(
                type="MESSAGE_CREATE", reason="malformed"
            )._value.get()
            assert counted >= 1
