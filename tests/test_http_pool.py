"""The upstream clients' pools: a connection that just carried a response is not polled."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any

import httpcore
import httpx
import pytest
import trio
from http_head import read_body, read_head
from hypothesis import given, settings
from hypothesis import strategies as st

from diswoot import http_pool
from diswoot.http_pool import LinearPool, RecentlyUsedBackend, http_client


class ClosingServer:
    """HTTP/1.1 on 127.0.0.1 that answers one request per connection, then closes it without
    saying so (no ``Connection: close``), as a server does when its keep-alive timeout ends."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        if await read_head(stream) is None:
            return
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()
        self.closed.set()


async def test_the_pool_uses_the_recently_used_backend() -> None:
    async with http_client(4) as client:
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool, LinearPool)
        assert isinstance(pool._network_backend, RecentlyUsedBackend)


@dataclass(eq=False)
class StubConnection:
    """A pooled connection's state, as the pool's bookkeeping asks about it."""

    id: int
    origin: str
    closed: bool = False
    expired: bool = False
    idle: bool = False
    available: bool = True

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.available

    def can_handle_request(self, origin: str) -> bool:
        return origin == self.origin


class StubRequest:
    def __init__(self, origin: str, connection: StubConnection | None) -> None:
        self.request = SimpleNamespace(url=SimpleNamespace(origin=origin))
        self.connection = connection

    def is_queued(self) -> bool:
        return self.connection is None

    def assign_to_connection(self, connection: StubConnection) -> None:
        self.connection = connection


def _stub_pool(cls: type[httpcore.AsyncConnectionPool], state: dict[str, Any]) -> Any:
    pool = cls(
        max_connections=state["max_connections"],
        max_keepalive_connections=state["max_keepalive"],
    )
    ids = itertools.count(1000)
    pool.create_connection = lambda origin: StubConnection(next(ids), origin)  # type: ignore[method-assign]
    pool._connections = [StubConnection(**c) for c in state["connections"]]
    by_id = {c.id: c for c in pool._connections}
    pool._requests = [StubRequest(o, by_id.get(on)) for o, on in state["requests"]]
    return pool


def _outcome(pool: Any, closing: list[Any]) -> tuple[list[int], list[int], list[int | None]]:
    return (
        [c.id for c in pool._connections],
        [c.id for c in closing],
        [r.connection.id if r.connection else None for r in pool._requests],
    )


_origins = st.sampled_from(["https://discord.com", "https://chat.example"])
_pool_states = st.fixed_dictionaries(
    {
        "max_connections": st.integers(1, 20),
        "max_keepalive": st.integers(0, 20),
        "connections": st.lists(
            st.fixed_dictionaries(
                {
                    "origin": _origins,
                    "closed": st.booleans(),
                    "expired": st.booleans(),
                    "idle": st.booleans(),
                    "available": st.booleans(),
                }
            ),
            max_size=20,
        ).map(lambda cs: [{"id": i, **c} for i, c in enumerate(cs)]),
        "requests": st.lists(st.tuples(_origins, st.none() | st.integers(0, 25)), max_size=10),
    }
)


@settings(max_examples=300, deadline=None)
@given(_pool_states)
def test_the_linear_pool_decides_as_httpcore_does(state: dict[str, Any]) -> None:
    """Same connections kept, closed and handed to queued requests, in the same order, as
    httpcore's own (quadratic) bookkeeping, for any pool state."""
    stock, linear = _stub_pool(httpcore.AsyncConnectionPool, state), _stub_pool(LinearPool, state)
    stock_closing: Callable[[], list[Any]] = stock._assign_requests_to_connections
    assert _outcome(linear, linear._assign_requests_to_connections()) == _outcome(
        stock, stock_closing()
    )


@pytest.mark.parametrize("recent", [0.0, 60.0])
async def test_a_closed_idle_connection_is_noticed_once_it_is_not_recent(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, recent: float
) -> None:
    """Past ``RECENT`` the pool polls the idle connection, sees the close and dials again;
    within it the request goes out on the dropped connection and fails as a transport error
    (the trade docs/modules.md describes: real servers close after seconds, not at once).
    """
    monkeypatch.setattr(http_pool, "RECENT", recent)
    server = ClosingServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    async with http_client(4) as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
        await server.closed.wait()  # the FIN is in our socket's queue (loopback)
        if recent == 0.0:
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
            assert server.connections == 2
        else:
            with pytest.raises(httpx.TransportError):
                await client.get(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize("recheck", [0.0, 60.0])
async def test_an_open_answer_stands_for_recheck_seconds(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, recheck: float
) -> None:
    """A poll that found the idle connection open is believed for ``RECHECK`` seconds: a
    close within that time is seen only after it (real sockets, the pool's own backend)."""
    monkeypatch.setattr(http_pool, "RECENT", 0.0)
    monkeypatch.setattr(http_pool, "RECHECK", recheck)
    server = ClosingServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    async with http_client(4) as client:
        backend = client._transport._pool._network_backend  # type: ignore[attr-defined]
        stream = await backend.connect_tcp("127.0.0.1", port)
        try:
            assert stream.get_extra_info("is_readable") is False  # polled: open
            await stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await server.closed.wait()  # the answer and the FIN are queued on our side
            assert stream.get_extra_info("is_readable") is (recheck == 0.0)
        finally:
            await stream.aclose()


class KeepAliveServer:
    """HTTP/1.1 on 127.0.0.1 that answers every request of a connection with ``ok``."""

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            _, data = await read_body(stream, head, data)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class RecordingStream(httpcore.AsyncNetworkStream):
    """A real network stream that notes every non-empty write."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, writes: list[bytes]) -> None:
        self._stream, self._writes = stream, writes

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout=timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._writes.append(bytes(buffer))
        await self._stream.write(buffer, timeout=timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class RecordingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._backend = httpcore.TrioBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **kwargs: Any
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout=timeout, **kwargs)
        return RecordingStream(stream, self.writes)


async def test_a_request_head_goes_out_in_one_write_with_its_body(nursery: trio.Nursery) -> None:
    """One send per request: a head that announces a body waits for it; one that does not
    (GET, an empty body) goes at once."""
    listeners = await nursery.start(
        partial(trio.serve_tcp, KeepAliveServer().handle, 0, host="127.0.0.1")
    )
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    recorder = RecordingBackend()
    async with http_client(4) as client:
        client._transport._pool._network_backend = RecentlyUsedBackend(recorder)  # type: ignore[attr-defined]
        assert (await client.post(url, json={"content": "hi\r\n\r\n"})).text == "ok"
        assert (await client.get(url)).text == "ok"
        assert (await client.post(url, content=b"")).text == "ok"
        assert (await client.post(url, content=b"raw")).text == "ok"
    assert [w.split(b" ", 1)[0] for w in recorder.writes] == [b"POST", b"GET", b"POST", b"POST"]
    assert recorder.writes[0].endswith(b"\r\n\r\n" + b'{"content":"hi\\r\\n\\r\\n"}')
    assert b"\r\nContent-Length: 0\r\n" in recorder.writes[2]  # the head alone, at once
    assert recorder.writes[3].endswith(b"\r\n\r\nraw")


class RecordingServer:
    """HTTP/1.1 on 127.0.0.1 that keeps each request's raw bytes and answers a JSON object
    (or, with ``answer=False``, never answers)."""

    def __init__(self, *, answer: bool = True) -> None:
        self.requests: list[bytes] = []
        self.answer = answer

    async def handle(self, stream: trio.SocketStream) -> None:
        data = await read_head(stream)
        if data is None:
            return
        head, _, received = data.partition(b"\r\n\r\n")
        body, _ = await read_body(stream, head, received)
        self.requests.append(head + b"\r\n\r\n" + body)
        if not self.answer:
            await trio.sleep_forever()
        await stream.send_all(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
            b"Connection: close\r\n\r\n{\"id\": 42}"
        )

    async def url(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


@pytest.mark.parametrize("routing", ["_transport_for_url", "_not_in_this_httpx"])
async def test_send_puts_the_same_request_on_the_wire_as_the_client(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, routing: str
) -> None:
    """``send`` skips the client's layers, not its bytes: request line, headers (the client's
    defaults under ours, in order) and body are what ``client.request`` sends, and the answer
    is read in full and knows its request; also through the client's own ``send`` (an httpx
    without the transport lookup)."""
    monkeypatch.setattr(http_pool, "_TRANSPORT_FOR_URL", routing)
    server = RecordingServer()
    base = await server.url(nursery)
    async with httpx.AsyncClient(timeout=5.0) as client:
        extra = {"Authorization": "Bot t", "User-Agent": "DiscordBot (x, 1)"}
        headers = http_pool.upstream_headers(client, extra)
        for kwargs in ({"json": {"content": "hé"}}, {"content": b"raw"}, {}):
            ours = await http_pool.send(
                client, "POST", f"{base}/a/b", params={"q": "1 2"}, headers=headers,
                timeout=client.timeout, **kwargs,
            )
            theirs = await client.request(
                "POST", f"{base}/a/b", params={"q": "1 2"}, headers=extra, **kwargs
            )
            assert server.requests[-2] == server.requests[-1]
            assert (ours.status_code, ours.json(), ours.request.url) == (
                theirs.status_code, theirs.json(), theirs.request.url
            )
    assert server.requests[0].startswith(b"POST /a/b?q=1+2 HTTP/1.1\r\n")
    assert b"\r\nUser-Agent: DiscordBot (x, 1)\r\n" in server.requests[0]
    assert b"python-httpx" not in server.requests[0]


async def test_send_keeps_the_timeout_it_is_given(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A server that never answers: the request fails with httpx's timeout, which knows the
    request, after the read timeout given (not the client's)."""
    base = await RecordingServer(answer=False).url(nursery)
    async with httpx.AsyncClient(timeout=60.0) as client:
        start = trio.current_time()
        with pytest.raises(httpx.ReadTimeout) as raised:
            await http_pool.send(
                client, "GET", f"{base}/slow", headers=client.headers,
                timeout=httpx.Timeout(7.0, connect=1.0),
            )
    assert 7.0 <= trio.current_time() - start < 8.0
    assert raised.value.request.url.path == "/slow"


async def test_send_goes_through_a_proxy_from_the_environment(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTP_PROXY`` is honoured as httpx honours it: the request goes to the proxy."""
    proxy = RecordingServer()
    monkeypatch.setenv("HTTP_PROXY", await proxy.url(nursery))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with http_client(2) as client:
        response = await http_pool.send(
            client, "GET", "http://chatwoot.invalid/api", headers=client.headers,
            timeout=client.timeout,
        )
    assert response.json() == {"id": 42}
    assert proxy.requests[0].startswith(b"GET http://chatwoot.invalid/api HTTP/1.1\r\n")


async def test_send_refuses_a_closed_client() -> None:
    client = httpx.AsyncClient()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await http_pool.send(
            client, "GET", "http://127.0.0.1:9/", headers=client.headers, timeout=client.timeout
        )
