"""End-to-end tests of run_gateway against FakeGateway.

Real sockets on 127.0.0.1 (no fake clock) for the handshake, payloads and close codes; memory
streams under the autojump clock for everything that depends on time.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from trio_websocket import HandshakeError, WebSocketConnection

from diswoot.errors import FatalConfigurationError
from diswoot.gateway.events import (
    GatewayEvent,
    GatewayStatus,
    InteractionCreate,
    MessageCreate,
    MessageDelete,
    Presence,
    Ready,
    Resumed,
    SessionState,
    TypingStart,
)
from diswoot.gateway.protocol import FATAL_CLOSE_MESSAGES
from diswoot.gateway.runner import GatewayFatalError, GatewaySettings, run_gateway
from diswoot.testing.fake_gateway import DEFAULT_BOT_USER, FakeGateway

INTERVAL = 41.25
BOT_ID = DEFAULT_BOT_USER["id"]
Opener = Callable[[str, int], AbstractAsyncContextManager[WebSocketConnection]]


def dm(msg_id: str, author_id: str = "80351110224678912", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": msg_id,
        "channel_id": "1290000000000000000",
        "channel_type": 1,
        "author": {"id": author_id, "username": "alice", "bot": False},
        "content": f"message {msg_id}",
        "type": 0,
        "flags": 0,
    }
    data.update(extra)
    return data


@dataclass
class Harness:
    fake: FakeGateway
    events: trio.MemoryReceiveChannel[GatewayEvent]
    presence_tx: trio.MemorySendChannel[Presence]
    stop: trio.Event
    session: SessionState
    status: GatewayStatus
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[None] | None = None
    fetches: int = 0

    async def next_event(self) -> GatewayEvent:
        return await self.events.receive()

    async def next_ready(self) -> Ready:
        event = await self.events.receive()
        assert isinstance(event, Ready), event
        return event

    async def finish(self) -> None:
        """Ask the gateway to stop and wait for run_gateway to return normally."""
        self.stop.set()
        await self.done.wait()
        assert self.result is not None
        self.result.unwrap()


def start_gateway(
    nursery: trio.Nursery,
    fake: FakeGateway,
    *,
    memory: bool,
    token: str = "test-token",
    intents: int = 1 << 12 | 1 << 14,
    compress: bool = True,
    presence: Presence | None = None,
    session: SessionState | None = None,
    buffer: int = 16,
    opener: Opener | None = None,
    fetch: Callable[[Harness], dict[str, Any]] | None = None,
) -> Harness:
    events_tx, events_rx = trio.open_memory_channel[GatewayEvent](buffer)
    presence_tx, presence_rx = trio.open_memory_channel[Presence](4)
    h = Harness(
        fake, events_rx, presence_tx, trio.Event(), session or SessionState(), GatewayStatus()
    )
    settings = GatewaySettings(token, intents, compress, presence)

    async def fetch_gateway() -> dict[str, Any]:
        h.fetches += 1
        if fetch is not None:
            return fetch(h)
        return {"url": fake.url, "shards": 1, "session_start_limit": dict(fake.session_start_limit)}

    async def run() -> None:
        kwargs: dict[str, Any] = {}
        if opener is not None or memory:
            kwargs["open_websocket"] = opener or fake.open_memory_websocket
        h.result = await outcome.acapture(
            run_gateway,
            settings,
            fetch_gateway,
            events_tx,
            presence_rx,
            h.stop,
            session=h.session,
            status=h.status,
            **kwargs,
        )
        h.done.set()

    nursery.start_soon(run)
    return h


@pytest.fixture
async def tcp_fake(nursery: trio.Nursery) -> FakeGateway:
    fake = FakeGateway()
    await fake.serve(nursery)
    return fake


@pytest.fixture
def memory_fake(nursery: trio.Nursery) -> FakeGateway:
    fake = FakeGateway()
    fake.serve_memory(nursery)
    return fake


# -- real sockets ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
async def test_identify_ready_and_events(
    nursery: trio.Nursery, tcp_fake: FakeGateway, compress: bool
) -> None:
    with trio.fail_after(10):
        h = start_gateway(
            nursery, tcp_fake, memory=False, compress=compress, presence=Presence("online", "DM me")
        )
        ready = await h.next_ready()
        assert isinstance(ready, Ready)
        assert (ready.user_id, ready.tag, ready.application_id) == (
            BOT_ID,
            "diswoot-test",
            "1200000000000000000",
        )
        assert h.status.state == "ready" and h.status.user_tag == "diswoot-test"
        assert h.session.session_id == ready.session_id
        assert h.session.resume_url == tcp_fake.url
        [identify] = tcp_fake.identifies
        assert identify["op"] == 2
        d = identify["d"]
        assert d["token"] == "test-token" and d["intents"] == 20480 and "compress" not in d
        assert d["properties"] == {"os": "linux", "browser": "diswoot", "device": "diswoot"}
        assert d["presence"]["activities"] == [
            {"name": "Custom Status", "type": 4, "state": "DM me"}
        ]
        assert ("compress=zlib-stream" in tcp_fake.paths[0]) is compress
        assert "v=10&encoding=json" in tcp_fake.paths[0]
        assert h.status.identify_remaining == 999

        tcp_fake.dispatch("GUILD_CREATE", {"id": "1"})
        tcp_fake.dispatch("MESSAGE_CREATE", dm("1", guild_id="9", channel_type=0))
        tcp_fake.dispatch("MESSAGE_CREATE", dm("2", author_id=BOT_ID))
        tcp_fake.dispatch("MESSAGE_CREATE", dm("3", webhook_id="5"))
        tcp_fake.dispatch("MESSAGE_CREATE", dm("4"))
        tcp_fake.dispatch("TYPING_START", {"channel_id": "12", "user_id": "7", "timestamp": 99})
        tcp_fake.dispatch("MESSAGE_DELETE", {"id": "4", "channel_id": "12"})
        interaction = {"id": "50", "type": 3, "token": "t", "user": {"id": "9"}}
        tcp_fake.dispatch("INTERACTION_CREATE", interaction)
        created = await h.next_event()
        assert isinstance(created, MessageCreate) and created.id == "4"
        assert await h.next_event() == TypingStart("12", "7", 99)
        assert await h.next_event() == MessageDelete("4", "12")
        assert await h.next_event() == InteractionCreate(interaction)
        await h.finish()
        assert h.session.seq == 9  # READY + 8 dispatches, ignored ones included


async def test_shutdown_closes_4000_and_a_restart_resumes(
    nursery: trio.Nursery, tcp_fake: FakeGateway
) -> None:
    with trio.fail_after(10):
        h = start_gateway(nursery, tcp_fake, memory=False)
        ready = await h.next_ready()
        tcp_fake.dispatch("MESSAGE_CREATE", dm("1"))
        await h.next_event()
        await h.finish()
        assert tcp_fake.close_codes == [4000]
        assert h.status.state == "stopped"
        with pytest.raises(trio.EndOfChannel):
            await h.events.receive()  # run_gateway closed events_tx

        tcp_fake.dispatch("MESSAGE_CREATE", dm("2"))  # while the daemon is down
        restored = SessionState(h.session.session_id, h.session.seq, h.session.resume_url)
        h2 = start_gateway(nursery, tcp_fake, memory=False, session=restored)
        replayed = await h2.next_event()
        assert isinstance(replayed, MessageCreate) and replayed.id == "2"
        assert await h2.next_event() == Resumed(replayed=1)
        assert tcp_fake.resumes[0]["d"] == {
            "token": "test-token",
            "session_id": ready.session_id,
            "seq": 2,
        }
        assert len(tcp_fake.identifies) == 1
        await h2.finish()
        assert tcp_fake.close_codes == [4000, 4000]


@pytest.mark.parametrize(
    ("code", "setup", "words"),
    [
        (4004, {"token": "wrong"}, "reset it in the Developer Portal and update DISCORD_TOKEN"),
        (4013, {"intents": 1 << 20}, "intents value is invalid"),
        (4014, {"intents": 1 << 12 | 1 << 15}, "enable the intent"),
        (4010, {}, "shard"),
        (4011, {}, "sharding is required"),
        (4012, {}, "API version"),
    ],
)
async def test_fatal_close_codes_raise(
    nursery: trio.Nursery, tcp_fake: FakeGateway, code: int, setup: dict[str, Any], words: str
) -> None:
    with trio.fail_after(10):
        h = start_gateway(nursery, tcp_fake, memory=False, **setup)
        if not setup:  # codes the fake cannot provoke from a valid client: close it with them
            await tcp_fake.wait_ready()
            await tcp_fake.close_client(code)
        await h.done.wait()
        assert h.result is not None
        with pytest.raises(GatewayFatalError) as info:
            h.result.unwrap()
        assert info.value.code == code
        assert words in str(info.value)
        assert str(info.value) == FATAL_CLOSE_MESSAGES[code]
        assert tcp_fake.connections == 1  # never retried
        assert h.status.state == "stopped"


# -- memory streams, autojump clock -------------------------------------------------------------


async def test_heartbeats_jitter_interval_and_seq(
    nursery: trio.Nursery,
    memory_fake: FakeGateway,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.25)
    with trio.fail_after(300):
        start = trio.current_time()
        h = start_gateway(nursery, memory_fake, memory=True)
        await h.next_event()
        await trio.sleep(0.25 * INTERVAL + 1)  # virtual time: just past the first beat
        assert len(memory_fake.heartbeats) == 1
        memory_fake.dispatch("MESSAGE_CREATE", dm("1"))
        await h.next_event()
        await trio.sleep(3 * INTERVAL)
        times = memory_fake.heartbeat_times
        assert times[0] - start == pytest.approx(0.25 * INTERVAL)
        assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx(
            [INTERVAL] * (len(times) - 1)
        )
        assert [hb["d"] for hb in memory_fake.heartbeats[:2]] == [1, 2]
        assert h.status.last_ack_latency == 0
        assert memory_fake.connections == 1
        await h.finish()


async def test_server_heartbeat_request_is_answered_at_once(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        await h.next_event()
        before = len(memory_fake.heartbeats)
        memory_fake.send_op(1, None)
        sent_at = trio.current_time()
        await trio.sleep(0.01)  # far less than any heartbeat interval (virtual time)
        assert len(memory_fake.heartbeats) == before + 1
        assert memory_fake.heartbeat_times[-1] == pytest.approx(sent_at)
        await h.finish()


async def test_zombie_connection_closes_4000_and_resumes(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.5)  # beats at 20.6 s, 61.9 s, ...
    fake = FakeGateway(ack_heartbeats=False)
    fake.serve_memory(nursery)
    with trio.fail_after(600):
        h = start_gateway(nursery, fake, memory=True)
        ready = await h.next_ready()
        assert isinstance(ready, Ready)
        fake.dispatch("MESSAGE_CREATE", dm("1"))
        await h.next_event()
        await trio.sleep(INTERVAL + 1)  # the first beat has gone out, unanswered
        assert len(fake.heartbeats) == 1 and fake.close_codes == []
        fake.ack_heartbeats = True
        await fake.wait_ready()  # READY
        await fake.wait_ready()  # RESUMED, after the zombie was detected at the next beat
        assert fake.close_codes == [4000]
        assert fake.resumes[0]["d"] == {
            "token": "test-token",
            "session_id": ready.session_id,
            "seq": 2,
        }
        assert await h.next_event() == Resumed(replayed=0)
        assert len(fake.identifies) == 1
        assert (h.status.resumes, h.status.reconnects, h.status.state) == (1, 1, "ready")
        await h.finish()


async def test_tcp_drop_resumes_and_replays_missed_events_once(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        ready = await h.next_ready()
        memory_fake.dispatch("MESSAGE_CREATE", dm("1"))
        assert isinstance(await h.next_event(), MessageCreate)
        await memory_fake.wait_ready()
        await memory_fake.drop_client()
        memory_fake.dispatch("MESSAGE_CREATE", dm("2"))  # sent while the client is away
        memory_fake.dispatch("MESSAGE_CREATE", dm("3"))
        await memory_fake.wait_ready()
        assert memory_fake.resumes[0]["d"]["session_id"] == ready.session_id
        assert memory_fake.resumes[0]["d"]["seq"] == 2
        got = [await h.next_event() for _ in range(3)]
        assert [e.id for e in got[:2] if isinstance(e, MessageCreate)] == ["2", "3"]
        assert got[2] == Resumed(replayed=2)
        memory_fake.dispatch("MESSAGE_CREATE", dm("4"))
        last = await h.next_event()
        assert isinstance(last, MessageCreate) and last.id == "4"  # nothing delivered twice
        assert h.session.seq == 5 and memory_fake.close_codes == []
        await h.finish()


@pytest.mark.parametrize(("op", "d"), [(7, None), (9, True)])
async def test_reconnect_and_resumable_invalid_session_resume(
    nursery: trio.Nursery,
    memory_fake: FakeGateway,
    autojump_clock: trio.testing.MockClock,
    op: int,
    d: Any,
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        ready = await h.next_ready()
        await memory_fake.wait_ready()
        memory_fake.send_op(op, d)
        await memory_fake.wait_ready()
        assert await h.next_event() == Resumed(replayed=0)
        assert memory_fake.close_codes == [4000]
        assert memory_fake.resumes[0]["d"]["session_id"] == ready.session_id
        assert len(memory_fake.identifies) == 1 and h.fetches == 1
        await h.finish()


async def test_invalid_session_false_waits_then_identifies_on_cached_url(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        first = await h.next_ready()
        await memory_fake.wait_ready()
        await trio.sleep(20)  # the 5 s identify spacing is not what delays the next identify
        invalidated_at = trio.current_time()
        memory_fake.send_op(9, False)
        second = await h.next_ready()
        assert isinstance(first, Ready) and isinstance(second, Ready)
        assert second.session_id != first.session_id
        waited = memory_fake.identify_times[1] - invalidated_at
        assert 1 <= waited <= 5
        assert memory_fake.resumes == [] and h.fetches == 1
        assert h.status.identifies == 2 and h.session.session_id == second.session_id
        await h.finish()


async def test_failed_resume_identifies_after_spacing(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        await h.next_event()
        await memory_fake.wait_ready()
        memory_fake.invalidate_sessions()
        await memory_fake.drop_client()
        memory_fake.dispatch("MESSAGE_CREATE", dm("1"))
        assert isinstance(await h.next_event(), Ready)
        assert len(memory_fake.resumes) == 1 and len(memory_fake.identifies) == 2
        assert memory_fake.identify_times[1] - memory_fake.identify_times[0] >= 5
        delivered = await h.next_event()
        assert isinstance(delivered, MessageCreate) and delivered.id == "1"
        await h.finish()


@pytest.mark.parametrize("code", [4003, 4005, 4007, 4009])
async def test_session_ending_close_codes_identify(
    nursery: trio.Nursery,
    memory_fake: FakeGateway,
    autojump_clock: trio.testing.MockClock,
    code: int,
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        first = await h.next_ready()
        await memory_fake.wait_ready()
        await memory_fake.close_client(code)
        second = await h.next_ready()
        assert isinstance(first, Ready) and isinstance(second, Ready)
        assert memory_fake.resumes == [] and len(memory_fake.identifies) == 2
        await h.finish()


@pytest.mark.parametrize("code", [1000, 1011, 4000, 4001, 4002, 4008])
async def test_resumable_close_codes_resume(
    nursery: trio.Nursery,
    memory_fake: FakeGateway,
    autojump_clock: trio.testing.MockClock,
    code: int,
) -> None:
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True)
        await h.next_event()
        await memory_fake.wait_ready()
        await memory_fake.close_client(code)
        assert await h.next_event() == Resumed(replayed=0)
        assert len(memory_fake.resumes) == 1 and len(memory_fake.identifies) == 1
        await h.finish()


async def test_backoff_between_failed_connects_and_url_refetch(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[float] = []

    @asynccontextmanager
    async def flaky(url: str, max_message_size: int) -> AsyncIterator[WebSocketConnection]:
        attempts.append(trio.current_time())
        if len(attempts) <= 4:
            raise HandshakeError("connection refused")
        assert max_message_size == 16 * 1024 * 1024
        async with memory_fake.open_memory_websocket(url, max_message_size) as ws:
            yield ws

    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True, opener=flaky)
        assert isinstance(await h.next_event(), Ready)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        for k, gap in enumerate(gaps):  # jittered: within [2^k / 2, 2^k]
            assert 2**k / 2 <= gap <= 2**k
        assert h.fetches == 5  # the url is refetched after each failed fresh connect
        assert h.status.connects == 1
        await h.finish()


async def test_exhausted_session_start_limit_waits_for_reset(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    def fetch(h: Harness) -> dict[str, Any]:
        remaining = 0 if h.fetches == 1 else 7
        limit = {"total": 1000, "remaining": remaining, "reset_after": 90_000, "max_concurrency": 1}
        return {"url": memory_fake.url, "session_start_limit": limit}

    with trio.fail_after(300):
        start = trio.current_time()
        h = start_gateway(nursery, memory_fake, memory=True, fetch=fetch)
        await trio.sleep(60)
        assert memory_fake.identifies == [] and h.status.identify_remaining == 0
        assert isinstance(await h.next_event(), Ready)
        assert memory_fake.identify_times[0] - start == pytest.approx(90)
        assert h.status.identify_remaining == 6
        await h.finish()


async def test_presence_updates_and_resend_after_reconnects(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    online = Presence("online", "DM to open a ticket")
    offline = Presence("idle", "Support is offline")
    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True, presence=online)
        await h.next_event()
        await memory_fake.wait_ready()
        assert memory_fake.identifies[0]["d"]["presence"] == online.to_payload()
        await trio.sleep(1)
        assert memory_fake.presences == []  # IDENTIFY carried it: no op 3 repeating it

        await h.presence_tx.send(offline)
        await trio.sleep(1)
        assert memory_fake.presences == [{"op": 3, "d": offline.to_payload()}]

        memory_fake.send_op(7, None)  # resume: the latest presence is sent again
        assert await h.next_event() == Resumed(replayed=0)
        await trio.sleep(1)
        assert [p["d"]["status"] for p in memory_fake.presences] == ["idle", "idle"]

        memory_fake.send_op(9, False)  # new session: IDENTIFY carries the latest presence
        assert isinstance(await h.next_event(), Ready)
        await trio.sleep(1)
        assert memory_fake.identifies[1]["d"]["presence"] == offline.to_payload()
        assert len(memory_fake.presences) == 2

        await h.presence_tx.send(online)  # a change after an IDENTIFY is sent
        await trio.sleep(1)
        assert memory_fake.presences[-1]["d"] == online.to_payload()
        await h.finish()


async def test_slow_consumer_never_delays_heartbeats(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        h = start_gateway(nursery, memory_fake, memory=True, buffer=1)
        await h.next_event()
        for i in range(10):
            memory_fake.dispatch("MESSAGE_CREATE", dm(str(i)))
        beats = len(memory_fake.heartbeats)
        await trio.sleep(5 * INTERVAL)  # nobody consumes events meanwhile
        assert len(memory_fake.heartbeats) >= beats + 4
        assert memory_fake.connections == 1 and memory_fake.close_codes == []
        got = [await h.next_event() for _ in range(10)]
        assert [e.id for e in got if isinstance(e, MessageCreate)] == [str(i) for i in range(10)]
        await h.finish()


async def test_stop_during_backoff_returns(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    @asynccontextmanager
    async def refused(url: str, max_message_size: int) -> AsyncIterator[WebSocketConnection]:
        raise HandshakeError("connection refused")
        yield  # pragma: no cover

    with trio.fail_after(300):
        h = start_gateway(nursery, memory_fake, memory=True, opener=refused)
        await trio.sleep(100)
        assert h.status.state == "disconnected"
        await h.finish()
        assert h.status.state == "stopped"


async def test_gateway_url_failures_are_retried_for_as_long_as_it_takes(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    """GET /gateway/bot failing (or answering without a url) for 20 minutes: no give-up."""
    fetched_at: list[float] = []

    def fetch(h: Harness) -> dict[str, Any]:
        fetched_at.append(trio.current_time())
        if trio.current_time() < 1200:
            if len(fetched_at) % 2:
                raise OSError("Discord is unreachable")
            return {"shards": 1}  # an answer without a url
        return {"url": memory_fake.url, "session_start_limit": {"remaining": 5}}

    with trio.fail_after(3600):
        h = start_gateway(nursery, memory_fake, memory=True, fetch=fetch)
        await trio.sleep(600)
        assert h.status.state == "disconnected" and memory_fake.connections == 0
        assert isinstance(await h.next_event(), Ready)
        gaps = [b - a for a, b in itertools.pairwise(fetched_at)]
        assert max(gaps) <= 60  # jittered exponential backoff, capped at 60 s
        assert gaps[:3] == sorted(gaps[:3])
        assert h.done.is_set() is False
        await h.finish()


async def test_a_rejected_token_on_gateway_bot_is_fatal(
    nursery: trio.Nursery, memory_fake: FakeGateway, autojump_clock: trio.testing.MockClock
) -> None:
    def fetch(h: Harness) -> dict[str, Any]:
        raise FatalConfigurationError("the Discord token was rejected (401)")

    with trio.fail_after(60):
        h = start_gateway(nursery, memory_fake, memory=True, fetch=fetch)
        await h.done.wait()
        assert h.result is not None
        with pytest.raises(FatalConfigurationError):
            h.result.unwrap()
        assert h.fetches == 1 and memory_fake.connections == 0
