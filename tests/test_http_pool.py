"""The upstream clients' pools: a connection that just carried a response is not polled."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
from http_head import read_head

from diswoot import http_pool
from diswoot.http_pool import RecentlyUsedBackend, http_client


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
        assert isinstance(pool._network_backend, RecentlyUsedBackend)


@pytest.mark.parametrize("recent", [0.0, 60.0])
async def test_a_closed_idle_connection_is_noticed_once_it_is_not_recent(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, recent: float
) -> None:
    """Past ``RECENT`` the pool polls the idle connection, sees the close and dials again;
    within it the request goes out on the dropped connection and fails as a transport error
    (the trade the module docstring describes: real servers close after seconds, not at once).
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
