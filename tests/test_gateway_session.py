"""The sans-IO GatewaySession: payloads in, actions out; no clock, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from diswoot.gateway.events import (
    GatewayStatus,
    InteractionCreate,
    MessageCreate,
    MessageDelete,
    Presence,
    Ready,
    Rejected,
    Resumed,
    SessionState,
    TypingStart,
    parse_dispatch,
)
from diswoot.gateway.protocol import (
    NextAction,
    Op,
    ZlibStreamDeflater,
    identify_payload,
    resume_payload,
)
from diswoot.gateway.session import (
    Action,
    ConnectionEnd,
    Credentials,
    Deliver,
    End,
    GatewaySession,
    HandshakeComplete,
    Send,
    StartHeartbeat,
)
from diswoot.gateway.shapes import MalformedEvent

BOT = "1100000000000000000"
USER = "80351110224678912"
CHANNEL = "1290000000000000000"
CREDS = Credentials("tok", 20480, compress=False)
HELLO = {"op": 10, "d": {"heartbeat_interval": 41250}}


def dm(msg_id: str = "1300000000000000001", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": msg_id,
        "channel_id": CHANNEL,
        "channel_type": 1,
        "author": {"id": USER, "username": "alice", "bot": False},
        "content": "my order is late",
        "type": 0,
        "flags": 0,
        "attachments": [],
        "embeds": [],
    }
    data.update(extra)
    return data


def dispatch(t: Any, d: Any, s: Any) -> dict[str, Any]:
    return {"op": 0, "t": t, "s": s, "d": d}


def ready(seq: int = 1, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "v": 10,
        "session_id": "abc",
        "user": {"id": BOT, "username": "diswoot", "discriminator": "0", "bot": True},
        "resume_gateway_url": "wss://resume.example",
        "application": {"id": "1200000000000000000", "flags": 0},
    }
    d.update(extra)
    return dispatch("READY", d, seq)


def carry_out(session: GatewaySession, actions: list[Action]) -> list[Action]:
    """What the driver does with Deliver: hand the event over, then acknowledge it."""
    for action in actions:
        if isinstance(action, Deliver):
            session.acknowledge(action.seq)
    return actions


def ready_session(state: SessionState | None = None) -> GatewaySession:
    session = GatewaySession(state or SessionState(), GatewayStatus(), CREDS)
    session.receive(HELLO, 0.0)
    carry_out(session, session.receive(ready(), 0.0))
    return session


# -- handshake ---------------------------------------------------------------------------------


def test_fresh_session_identifies_with_the_latest_presence() -> None:
    status = GatewayStatus()
    online = Presence("online", "DM me")
    session = GatewaySession(SessionState(), status, CREDS, lambda: online)
    assert session.receive(HELLO, 0.0) == [
        StartHeartbeat(41.25),
        Send(Op.IDENTIFY, identify_payload("tok", 20480, online.to_payload())),
    ]
    assert (status.state, status.identifies, status.resumes) == ("identifying", 1, 0)


def test_saved_session_resumes_at_its_seq() -> None:
    status = GatewayStatus()
    session = GatewaySession(SessionState("abc", 41, "wss://r", BOT), status, CREDS)
    actions = session.receive(HELLO, 0.0)
    assert actions == [StartHeartbeat(41.25), Send(Op.RESUME, resume_payload("tok", "abc", 41))]
    assert (status.state, status.identifies, status.resumes) == ("resuming", 0, 1)
    replayed = dm()
    assert carry_out(session, session.receive(dispatch("MESSAGE_CREATE", replayed, 42), 1.0)) == [
        Deliver(MessageCreate(replayed), 42)
    ]
    assert session.receive(dispatch("RESUMED", None, None), 1.0) == [
        Deliver(Resumed(replayed=1), None),
        HandshakeComplete(),
    ]
    assert session.handshake_done and status.state == "ready" and session.state.seq == 42


def test_ready_starts_the_session() -> None:
    state, status = SessionState(), GatewayStatus()
    session = GatewaySession(state, status, CREDS)
    session.receive(HELLO, 0.0)
    [deliver, complete] = session.receive(ready(), 0.0)
    assert deliver == Deliver(
        Ready(BOT, "diswoot", "0", "abc", "1200000000000000000", "wss://resume.example"), 1
    )
    assert complete == HandshakeComplete()
    assert state.seq is None  # not before the driver handed READY over
    session.acknowledge(1)
    assert state == SessionState("abc", 1, "wss://resume.example", BOT)
    assert (status.state, status.user_tag) == ("ready", "diswoot")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"op": 7, "d": None}, "server asked to reconnect before HELLO"),
        ({"op": 0, "t": "READY", "s": 1, "d": {}}, "expected HELLO, got op 0"),
        ({"op": 10, "d": None}, "HELLO without a usable heartbeat_interval"),
        ({"op": 10, "d": {"heartbeat_interval": "41250"}}, "HELLO without"),
        ({"op": 10, "d": {"heartbeat_interval": True}}, "HELLO without"),
        ({"op": 10, "d": {"heartbeat_interval": -5}}, "HELLO without"),
    ],
)
def test_anything_but_a_usable_hello_first_ends_the_connection(
    payload: dict[str, Any], reason: str
) -> None:
    session = GatewaySession(SessionState(), GatewayStatus(), CREDS)
    [end] = session.receive(payload, 0.0)
    assert isinstance(end, End) and end.end.action is NextAction.RESUME
    assert end.end.reason.startswith(reason)
    assert not session.hello_received


def test_a_ready_without_session_id_is_rejected_and_a_new_session_started() -> None:
    session = GatewaySession(SessionState(), GatewayStatus(), CREDS)
    session.receive(HELLO, 0.0)
    actions = carry_out(session, session.receive(ready(session_id=None), 0.0))
    assert actions == [
        Deliver(Rejected("READY", None, "malformed", "session_id is not a non-empty string"), 1),
        End(ConnectionEnd(NextAction.IDENTIFY, "malformed READY: session_id is not a "
                          "non-empty string")),
    ]
    assert not session.handshake_done


def test_a_resume_url_that_is_not_a_websocket_url_is_dropped() -> None:
    session = GatewaySession(SessionState(), GatewayStatus(), CREDS)
    session.receive(HELLO, 0.0)
    carry_out(session, session.receive(ready(resume_gateway_url="http://169.254.169.254/"), 0.0))
    assert session.state.session_id == "abc" and session.state.resume_url is None


# -- dispatches and seq ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "d", "detail"),
    [
        ("MESSAGE_CREATE", {k: v for k, v in dm().items() if k != "channel_id"},
         "channel_id is not a snowflake string"),
        ("MESSAGE_CREATE", dm(author="alice"), "author is not an object"),
        ("MESSAGE_CREATE", dm(id=1300000000000000001), "id is not a snowflake string"),
        ("MESSAGE_CREATE", [dm()], "d is not an object"),
        ("MESSAGE_CREATE", dm(type="DEFAULT"), "type is not an integer"),
        ("MESSAGE_CREATE", dm(content={"text": "hi"}), "content is not a string"),
        ("MESSAGE_CREATE", dm(attachments=[{"id": "1", "url": 5}]),
         "attachments[0].url is not a string"),
        ("MESSAGE_UPDATE", dm(author={"id": None}), "author.id is not a snowflake string"),
        ("MESSAGE_DELETE", {"id": "1"}, "channel_id is not a snowflake string"),
        ("TYPING_START", {"channel_id": CHANNEL, "user_id": USER, "timestamp": "now"},
         "timestamp is not an integer"),
        ("INTERACTION_CREATE", {"id": "5", "type": 2},
         "field 'token' must be a string of 1 to 152133 characters"),
        ("INTERACTION_CREATE", {"id": "5", "type": 3, "token": "t", "user": ["x"]},
         "field 'user' must be an object"),
        ("INTERACTION_CREATE", {"id": "5", "type": 1},
         "type is PING, which the gateway never sends"),
    ],
)
def test_a_malformed_dispatch_is_rejected_and_acknowledged(t: str, d: Any, detail: str) -> None:
    session = ready_session()
    actions = carry_out(session, session.receive(dispatch(t, d, 2), 5.0))
    event_id = d.get("id") if isinstance(d, dict) and isinstance(d.get("id"), str) else None
    assert actions == [Deliver(Rejected(t, event_id, "malformed", detail), 2)]
    assert session.state.seq == 2  # a RESUME never replays it
    assert session.heartbeat(6.0) == [Send(Op.HEARTBEAT, 2, priority=True)]


@pytest.mark.parametrize(
    ("t", "d"),
    [
        ("GUILD_CREATE", {"id": "5"}),
        ("CHANNEL_PINS_UPDATE", None),
        ("MESSAGE_CREATE", dm(type=7)),  # a system message: a member joined
        ("MESSAGE_CREATE", dm(type=46, author=None)),  # any system type, whatever its shape
        ("MESSAGE_CREATE", dm(guild_id="5", channel_type=0)),
        ("MESSAGE_CREATE", dm(author={"id": BOT, "bot": True})),  # our own echo
        ("MESSAGE_CREATE", dm(webhook_id="77")),
        ("MESSAGE_UPDATE", {"id": "1", "channel_id": CHANNEL, "embeds": []}),  # partial update
        ("TYPING_START", {"channel_id": CHANNEL, "user_id": USER, "guild_id": "5"}),
    ],
)
def test_ignored_dispatches_advance_seq_at_once(t: str, d: Any) -> None:
    session = ready_session()
    assert session.receive(dispatch(t, d, 2), 0.0) == []
    assert session.state.seq == 2


def test_an_unknown_event_name_type_is_rejected_as_other() -> None:
    session = ready_session()
    actions = carry_out(session, session.receive(dispatch(12, dm(), 2), 0.0))
    assert actions == [Deliver(Rejected("other", "1300000000000000001", "malformed",
                                        "t is not a string"), 2)]
    assert session.state.seq == 2


def test_an_undecodable_frame_is_rejected_without_ending_the_connection() -> None:
    session = ready_session()
    for frame in ("{not json", '{"op": "0"}', "[]", b"\xff\xfe"):
        assert session.receive_frame(frame, 0.0) == [
            Deliver(Rejected("other", None, "undecodable", "not a JSON gateway payload"), None)
        ]
    assert session.state.seq == 1
    payload = dispatch("MESSAGE_DELETE", {"id": "1", "channel_id": CHANNEL}, 2)
    assert session.receive_frame(json.dumps(payload), 0.0) == [
        Deliver(MessageDelete("1", CHANNEL), 2)
    ]


@pytest.mark.parametrize("s", [None, "3", 3.0, True, [3]])
def test_a_dispatch_without_an_integer_seq_leaves_seq_alone(s: Any) -> None:
    session = ready_session()
    carry_out(session, session.receive(dispatch("MESSAGE_CREATE", dm(), s), 0.0))
    assert session.state.seq == 1


def test_own_typing_and_typing_of_users() -> None:
    session = ready_session()
    typing = {"channel_id": CHANNEL, "user_id": USER, "timestamp": 1700000000}
    assert session.receive(dispatch("TYPING_START", typing, 2), 0.0) == [
        Deliver(TypingStart(CHANNEL, USER, 1700000000), 2)
    ]
    own = {**typing, "user_id": BOT}
    assert session.receive(dispatch("TYPING_START", own, 3), 0.0) == []
    assert session.state.seq == 3


# -- heartbeats --------------------------------------------------------------------------------


def test_heartbeat_ack_bookkeeping_and_zombie_rule() -> None:
    session = ready_session()
    status = session.status
    assert session.heartbeat(10.0) == [Send(Op.HEARTBEAT, 1, priority=True)]
    assert session.receive({"op": 11}, 10.25) == []
    assert status.last_ack_latency == pytest.approx(0.25)
    assert session.heartbeat(20.0) == [Send(Op.HEARTBEAT, 1, priority=True)]
    [end] = session.heartbeat(30.0)  # no ACK since the previous beat
    assert end == End(ConnectionEnd(NextAction.RESUME, "zombie connection: no heartbeat ACK"))


def test_a_missing_ack_behind_a_slow_bridge_is_not_a_zombie() -> None:
    session = ready_session()
    beat = [Send(Op.HEARTBEAT, 1, priority=True)]
    assert session.heartbeat(10.0) == beat
    session.delivery_blocked(True)  # the driver waits for the bridge to take an event
    assert session.heartbeat(20.0) == beat  # the ACK may be queued behind that event
    session.delivery_blocked(False)
    assert session.heartbeat(30.0) == beat  # it was blocked during the last interval
    [end] = session.heartbeat(40.0)  # not blocked for a whole interval, still no ACK
    assert isinstance(end, End) and end.end.action is NextAction.RESUME


def test_a_stall_long_ago_does_not_excuse_a_later_missing_ack() -> None:
    """discord-api.md: no ACK between two heartbeats means a zombie; a stall excuses only the
    interval it happened in, even when the ACKs came in time after it."""
    session = ready_session()
    beat = [Send(Op.HEARTBEAT, 1, priority=True)]
    session.delivery_blocked(True)
    session.delivery_blocked(False)
    assert session.heartbeat(10.0) == beat
    session.receive({"op": 11, "d": None}, 10.1)  # ACKed
    assert session.heartbeat(20.0) == beat
    [end] = session.heartbeat(30.0)  # no ACK since the beat at 20 s
    assert isinstance(end, End) and end.end.action is NextAction.RESUME


def test_server_heartbeat_request_is_answered_at_once() -> None:
    session = ready_session()
    assert session.receive({"op": 1, "d": None}, 3.0) == [Send(Op.HEARTBEAT, 1, priority=True)]


@pytest.mark.parametrize(
    ("payload", "end"),
    [
        ({"op": 7, "d": None},
         ConnectionEnd(NextAction.RESUME, "server requested a reconnect", requested=True)),
        ({"op": 9, "d": True}, ConnectionEnd(NextAction.RESUME, "invalid session (resumable)")),
        ({"op": 9, "d": False},
         ConnectionEnd(NextAction.IDENTIFY, "invalid session", invalid_session=True)),
        ({"op": 9, "d": "yes"},
         ConnectionEnd(NextAction.IDENTIFY, "invalid session", invalid_session=True)),
    ],
)
def test_reconnect_and_invalid_session_end_the_connection(
    payload: dict[str, Any], end: ConnectionEnd
) -> None:
    assert ready_session().receive(payload, 0.0) == [End(end)]


def test_unknown_ops_and_a_second_hello_are_ignored() -> None:
    session = ready_session()
    assert session.receive({"op": 42, "d": {}}, 0.0) == []
    assert session.receive(HELLO, 0.0) == []


def test_zlib_stream_frames_and_a_corrupt_stream() -> None:
    session = GatewaySession(SessionState(), GatewayStatus(), Credentials("tok", 1, True))
    deflater = ZlibStreamDeflater()
    frame = deflater.compress(json.dumps(HELLO))
    [start, identify] = session.receive_frame(frame[:3], 0.0) + session.receive_frame(
        frame[3:], 0.0
    )
    assert start == StartHeartbeat(41.25) and isinstance(identify, Send)
    [end] = session.receive_frame(b"garbage\x00\x00\xff\xff", 0.0)
    assert isinstance(end, End) and end.end.action is NextAction.RESUME


# -- message shapes Discord sends (discord-api.md §2.1) ----------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        dm(type=19, message_reference={"message_id": "1", "channel_id": CHANNEL},
           referenced_message=None),  # a reply to a deleted message
        dm(content="", flags=1 << 14, message_reference={"type": 1, "message_id": "1"},
           message_snapshots=[{"message": {"content": "forwarded text", "attachments": [],
                                           "embeds": [], "type": 0, "flags": 0}}]),
        dm(content="", poll={"question": {"text": "Pizza?"}, "answers": [
            {"answer_id": 1, "poll_media": {"text": "Yes"}}]}),
        dm(content="", flags=1 << 13, attachments=[{
            "id": "1300000000000000002", "filename": "voice-message.ogg", "size": 9000,
            "url": "https://cdn.discordapp.com/a.ogg", "content_type": "audio/ogg",
            "duration_secs": 3.2, "waveform": "AAAA"}]),
        dm(content="", sticker_items=[{"id": "1", "name": "wave", "format_type": 1}]),
    ],
    ids=["reply-to-deleted", "forward", "poll", "voice", "sticker"],
)
def test_unusual_but_valid_dms_flow_through(data: dict[str, Any]) -> None:
    event = parse_dispatch("MESSAGE_CREATE", data, BOT)
    assert event == MessageCreate(data)
    assert isinstance(event, MessageCreate) and event.data is data


def test_a_malformed_message_cannot_be_built_at_all() -> None:
    with pytest.raises(MalformedEvent, match="channel_id"):
        MessageCreate({"id": "1", "author": {"id": USER}})


def test_a_valid_interaction_flows_through() -> None:
    data = {"id": "1300000000000000100", "type": 3, "token": "aW50", "data": {},
            "user": {"id": USER}}
    assert parse_dispatch("INTERACTION_CREATE", data, BOT) == InteractionCreate(data)
