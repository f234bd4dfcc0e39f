"""The floor: what the mandated libraries alone cost per request, on this machine, now.

``python -m bench.floor`` (also ``python -m bench --floor``) measures, each in its own process
so one figure never contains another's CPU:

* ``httpx``: ``httpx.AsyncClient`` under trio POSTing a Chatwoot-sized JSON body, 20 at a
  time, each of the 20 workers on a kept-alive client of its own; CPU of the client process
  per request;
* ``httpx_shared_pool``: the same through *one* client's pool of 20 connections, the stock
  way.  httpcore scans every pooled connection on each request and response, which about
  doubles the CPU per request at 20 connections; the daemon's pool (``diswoot/http_pool.py``)
  avoids that scan, so the floor is the figure without it;
* ``httpcore``: as ``httpx``, with ``httpcore.AsyncConnectionPool`` alone;
* ``quart_keepalive`` / ``quart_new_connection``: a quart-trio app on hypercorn's trio worker
  answering a webhook-sized POST (reads, parses, answers JSON), CPU of the server process per
  request, on kept-alive connections / one connection per request (as Chatwoot sends webhooks);
* ``asgi_keepalive``: a bare ASGI app on hypercorn, kept alive;
* ``httpx_paced`` / ``quart_new_connection_paced``: one request at a time, one every 1/20 s
  (the steady scenarios' rate), so each starts from an idle loop as a steady message does;
  waking from idle costs about twice the back-to-back figure on this machine kind.

The daemon's CPU per message divided by the floor of the same work is its overhead ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from bench.procstat import cpu_seconds

REQUESTS = 2000
PACED_REQUESTS = 100
PACED_RATE = 20.0  # requests/s, the steady scenarios' default rate
CONCURRENCY = 20
WARMUP = 200
BODY = json.dumps(
    {
        "content": "Hello, my order #1234 has not arrived yet, can you check? " * 3,
        "message_type": "incoming",
        "private": False,
        "source_id": "1300000000000000001",
        "content_attributes": {"in_reply_to_external_id": "1300000000000000000"},
    }
).encode()
WEBHOOK = json.dumps(
    {
        "event": "message_created",
        "id": 4242,
        "content": "Sorry about that! Let me check." * 4,
        "message_type": "incoming",
        "private": False,
        "account": {"id": 1, "name": "Acme"},
        "inbox": {"id": 7, "name": "Discord"},
        "conversation": {
            "id": 99,
            "status": "open",
            "meta": {"sender": {"id": 5, "identifier": "discord:80351110224678912"}},
            "contact_inbox": {"source_id": "f2b7a4c4-8e61-4c3b-9d0e-6a5a0f6c1e11"},
            "messages": [{"id": 4242, "content": "x" * 200}],
        },
        "sender": {"id": 5, "name": "alice", "type": "contact"},
        "created_at": "2026-12-02T12:00:00.000Z",
    }
).encode()
ANSWER = json.dumps({"id": 4242, "content": "x" * 400, "attachments": [], "sender": {}}).encode()


# ---------------------------------------------------------------------- servers (subprocess)


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


def _quart_app() -> Any:
    from quart import request
    from quart_trio import QuartTrio

    app = QuartTrio("floor")

    @app.post("/webhook")
    async def webhook() -> tuple[dict[str, Any], int]:
        body = json.loads(await request.get_data(cache=False, as_text=False))
        return {"ok": True, "event": body.get("event")}, 200

    return app


def serve(kind: str, port: int) -> None:
    """Run one server until killed (the measured process for the server floors)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 60.0
    app = _quart_app() if kind == "quart" else _asgi_app
    trio.run(hypercorn_serve, app, config)


# ---------------------------------------------------------------------- load and measurement


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A server subprocess on a free port; CPU read from /proc."""

    def __init__(self, kind: str) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--serve", kind, "--port", str(self.port)],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the {kind} floor server did not start") from None
                time.sleep(0.05)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def _drive(requests: Sequence[Callable[[], Awaitable[None]]], total: int) -> None:
    """``total`` requests, CONCURRENCY at a time; worker ``i`` uses ``requests[i % len]``."""
    remaining = iter(range(total))

    async def worker(request: Callable[[], Awaitable[None]]) -> None:
        for _ in remaining:
            await request()

    async with trio.open_nursery() as nursery:
        for i in range(CONCURRENCY):
            nursery.start_soon(worker, requests[i % len(requests)])


async def _measure(
    requests: Sequence[Callable[[], Awaitable[None]]], cpu: Callable[[], float], total: int
) -> float:
    """CPU milliseconds per request of the process that ``cpu`` reads."""
    await _drive(requests, WARMUP)
    before = cpu()
    await _drive(requests, total)
    return (cpu() - before) / total * 1000


async def _measure_paced(
    request: Callable[[], Awaitable[None]], cpu: Callable[[], float], total: int
) -> float:
    """CPU milliseconds per request, one request every 1/PACED_RATE s."""
    for _ in range(WARMUP // 10):
        await request()
    before, start = cpu(), trio.current_time()
    for i in range(total):
        await trio.sleep_until(start + i / PACED_RATE)
        await request()
    return (cpu() - before) / total * 1000


async def httpx_client_floor(
    url: str, total: int, *, shared_pool: bool = False, paced: bool = False
) -> float:
    import httpx

    headers = {"Content-Type": "application/json", "api_access_token": "t"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    shared = httpx.AsyncClient(limits=limits)
    own = not (shared_pool or paced)
    clients = [httpx.AsyncClient() for _ in range(CONCURRENCY)] if own else [shared]

    def request_of(client: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
        async def request() -> None:
            response = await client.post(url, content=BODY, headers=headers)
            response.json()

        return request

    try:
        if paced:
            return await _measure_paced(request_of(shared), cpu_seconds, total)
        return await _measure([request_of(c) for c in clients], cpu_seconds, total)
    finally:
        for client in {shared, *clients}:
            await client.aclose()


async def httpcore_floor(url: str, total: int) -> float:
    import httpcore

    headers = [(b"Content-Type", b"application/json"), (b"api_access_token", b"t")]
    pools = [httpcore.AsyncConnectionPool(max_connections=1) for _ in range(CONCURRENCY)]

    def request_of(pool: httpcore.AsyncConnectionPool) -> Callable[[], Awaitable[None]]:
        async def request() -> None:
            response = await pool.request("POST", url, headers=headers, content=BODY)
            json.loads(response.content)

        return request

    try:
        return await _measure([request_of(p) for p in pools], cpu_seconds, total)
    finally:
        for pool in pools:
            await pool.aclose()


async def server_floor(
    server: _Server, total: int, *, new_connection: bool, paced: bool = False
) -> float:
    import httpx

    url = f"http://127.0.0.1:{server.port}/webhook"
    headers = {"Content-Type": "application/json"}
    if new_connection:
        headers["Connection"] = "close"
    async with httpx.AsyncClient() as client:

        async def request() -> None:
            response = await client.post(url, content=WEBHOOK, headers=headers)
            response.raise_for_status()

        if paced:
            return await _measure_paced(request, server.cpu, total)
        return await _measure([request], server.cpu, total)


def measure(total: int = REQUESTS, paced: int = PACED_REQUESTS) -> dict[str, float]:
    """Every floor figure, in CPU milliseconds per request."""
    results: dict[str, float] = {}
    asgi = _Server("asgi")
    try:
        url = f"http://127.0.0.1:{asgi.port}/messages"
        results["httpx_ms"] = trio.run(httpx_client_floor, url, total)
        results["httpx_shared_pool_ms"] = trio.run(
            lambda: httpx_client_floor(url, total, shared_pool=True)
        )
        results["httpcore_ms"] = trio.run(httpcore_floor, url, total)
        results["httpx_paced_ms"] = trio.run(lambda: httpx_client_floor(url, paced, paced=True))
        results["asgi_keepalive_ms"] = trio.run(
            lambda: server_floor(asgi, total, new_connection=False)
        )
    finally:
        asgi.stop()
    quart = _Server("quart")
    try:
        results["quart_keepalive_ms"] = trio.run(
            lambda: server_floor(quart, total, new_connection=False)
        )
        results["quart_new_connection_ms"] = trio.run(
            lambda: server_floor(quart, total, new_connection=True)
        )
        results["quart_new_connection_paced_ms"] = trio.run(
            lambda: server_floor(quart, paced, new_connection=True, paced=True)
        )
    finally:
        quart.stop()
    return {name: round(value, 3) for name, value in results.items()}


def floor_of_work(
    floor: Mapping[str, float], *, requests: float, webhooks: float, paced: bool = False
) -> float | None:
    """Library CPU (ms) for ``requests`` outgoing HTTP calls and ``webhooks`` received ones
    (each webhook on its own connection, as Chatwoot sends them); ``paced``: each from an
    idle loop.  None when ``floor`` lacks the figures (an older JSON line)."""
    suffix = "_paced_ms" if paced else "_ms"
    client, server = floor.get(f"httpx{suffix}"), floor.get(f"quart_new_connection{suffix}")
    if client is None or server is None:
        return None
    return requests * client + webhooks * server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--serve", choices=["asgi", "quart"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    figures = measure(args.requests)
    for name, value in figures.items():
        print(f"{name:<30} {value:8.3f} ms CPU per request")
    print(json.dumps({"floor": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
