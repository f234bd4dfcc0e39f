"""FakeGateway's own protocol checks, driven by a raw trio-websocket client over 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from diswoot.gateway.connection import open_gateway_websocket
from diswoot.gateway.protocol import ZlibStreamInflater
from diswoot.testing.fake_gateway import FakeGateway

QUERY = "/?v=10&encoding=json"
IDENTIFY_D: dict[str, Any] = {"token": "test-token", "intents": 20480, "properties": {}}
IDENTIFY: dict[str, Any] = {"op": 2, "d": IDENTIFY_D}


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeGateway:
    gateway = FakeGateway()
    await gateway.serve(nursery)
    return gateway


@asynccontextmanager
async def client(fake: FakeGateway, query: str = QUERY) -> AsyncIterator[WebSocketConnection]:
    async with open_gateway_websocket(fake.url + query, 1 << 20) as ws:
        yield ws


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    return dict(json.loads(await ws.get_message()))


async def send(ws: WebSocketConnection, payload: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(payload))


async def closed_with(ws: WebSocketConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    return info.value.reason.code if info.value.reason else None


async def identify(ws: WebSocketConnection, payload: dict[str, Any] = IDENTIFY) -> dict[str, Any]:
    hello = await receive(ws)
    assert hello == {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}
    await send(ws, payload)
    return await receive(ws)


async def test_ready_payload(fake: FakeGateway) -> None:
    with trio.fail_after(10):
        async with client(fake) as ws:
            ready = await identify(ws)
            assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
            d = ready["d"]
            assert d["v"] == 10 and d["user"]["id"] == "1100000000000000000"
            assert d["resume_gateway_url"] == fake.url and d["guilds"] == []
            assert d["application"] == {"id": "1200000000000000000", "flags": 0}
            await send(ws, {"op": 1, "d": 1})
            assert await receive(ws) == {"op": 11, "d": None, "s": None, "t": None}
            await ws.aclose(4000)
        assert fake.session_start_limit["remaining"] == 999
        assert fake.close_codes == [4000]


async def test_zlib_stream_frames(fake: FakeGateway) -> None:
    with trio.fail_after(10):
        async with client(fake, QUERY + "&compress=zlib-stream") as ws:
            inflater = ZlibStreamInflater()
            hello = await ws.get_message()
            assert isinstance(hello, bytes) and hello.endswith(b"\x00\x00\xff\xff")
            assert json.loads(inflater.feed(hello) or "")["op"] == 10
            await send(ws, IDENTIFY)
            ready = await ws.get_message()
            assert isinstance(ready, bytes)
            assert json.loads(inflater.feed(ready) or "")["t"] == "READY"


@pytest.mark.parametrize(
    ("query", "payloads", "code"),
    [
        ("/?v=9&encoding=json", [], 4012),
        ("/?v=10&encoding=etf", [], 4002),
        (QUERY, [{"op": 3, "d": {}}], 4003),
        (QUERY, [{"op": 5, "d": {}}], 4001),
        (QUERY, [{"op": 1, "d": "x" * 5000}], 4002),
        (QUERY, [{**IDENTIFY, "d": {**IDENTIFY_D, "token": "nope"}}], 4004),
        (QUERY, [{**IDENTIFY, "d": {**IDENTIFY_D, "intents": 1 << 22}}], 4013),
        (QUERY, [{**IDENTIFY, "d": {**IDENTIFY_D, "intents": 1 << 15}}], 4014),
        (QUERY, [IDENTIFY, IDENTIFY], 4005),
        (QUERY, [{"op": 1, "d": None}] * 121, 4008),
    ],
)
async def test_protocol_violations_close_with_discords_codes(
    fake: FakeGateway, query: str, payloads: list[dict[str, Any]], code: int
) -> None:
    with trio.fail_after(10):
        async with client(fake, query) as ws:
            for payload in payloads:
                try:
                    await send(ws, payload)
                except ConnectionClosed:
                    break
            assert await closed_with(ws) == code
        assert fake.close_codes == []  # those were the server's closes, not the client's


async def test_resume_replays_and_normal_close_ends_session(fake: FakeGateway) -> None:
    with trio.fail_after(10):
        async with client(fake) as ws:
            ready = await identify(ws)
            fake.dispatch("MESSAGE_CREATE", {"id": "1"})
            assert (await receive(ws))["s"] == 2
            await ws.aclose(4000)
        session_id = ready["d"]["session_id"]
        fake.dispatch("MESSAGE_CREATE", {"id": "2"})
        fake.dispatch("TYPING_START", {"channel_id": "3"})
        resume = {"op": 6, "d": {"token": "test-token", "session_id": session_id, "seq": 2}}
        async with client(fake) as ws:
            await identify(ws, resume)  # the HELLO check; first replayed dispatch returned
            replay_2 = await receive(ws)
            resumed = await receive(ws)
            assert (replay_2["s"], replay_2["t"], resumed["t"]) == (4, "TYPING_START", "RESUMED")
            await ws.aclose(1000)  # a normal close invalidates the session, as on Discord
        async with client(fake) as ws:
            assert await identify(ws, resume) == {"op": 9, "d": False, "s": None, "t": None}
        assert fake.close_codes == [4000, 1000, 1000]
        await fake.wait_handshakes(2)


async def test_resume_with_future_seq_is_4007(fake: FakeGateway) -> None:
    with trio.fail_after(10):
        async with client(fake) as ws:
            ready = await identify(ws)
            await ws.aclose(4000)
        bad = {
            "op": 6,
            "d": {"token": "test-token", "session_id": ready["d"]["session_id"], "seq": 99},
        }
        async with client(fake) as ws:
            await receive(ws)
            await send(ws, bad)
            assert await closed_with(ws) == 4007
