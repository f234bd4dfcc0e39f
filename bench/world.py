"""The benchmark's world: in-process fakes, the real daemon as a child process, timed logs.

The fakes (FakeDiscord with its gateway, FakeChatwoot) run in this trio run; the daemon is
``python -m diswoot`` configured through environment variables, listening on a fixed free port
so the benchmark can post webhooks to it.  The fakes' request logs are swapped for
:class:`TimedLog` lists that stamp every request with ``time.perf_counter()`` on arrival, which
is what the latency figures measure to: for FakeChatwoot, a Quart app, the moment hypercorn
hands the request to it (:class:`StampArrival`), before Quart routes and parses it - that is the
fake's own work, not the daemon's.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, SupportsIndex, TypeVar, cast

import h11
import httpx
import trio

from diswoot.config import Config
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_chatwoot import RecordedRequest as ChatwootRequest
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.fake_discord import RecordedRequest as DiscordRequest
from diswoot.testing.fake_gateway import FakeGateway
from diswoot.testing.harness import WEBHOOK_SECRET, config_environment, world_config

T = TypeVar("T")

ARRIVAL: contextvars.ContextVar[float] = contextvars.ContextVar("arrival")
"""When the request being handled reached the fake's app (set by :class:`StampArrival`)."""

FIRST_USER_ID = 800_000_000_000_000_000
READY_TIMEOUT = 30.0
DRAIN_POLL = 0.25
"""Seconds between the drain checks (``/health``) after a scenario's window."""

# Per-route buckets as Discord is observed to answer them (discord-api.md §5.2 and §6): 5
# messages per 5 s per channel, one reaction per 0.25 s per channel.  Other routes (notably
# Create DM, which has no documented bucket) are limited only by the global 50 requests/s.
ROUTE_LIMITS: dict[str, tuple[int, float]] = {
    "POST /channels/{channel_id}/messages": (5, 5.0),
    "reactions": (1, 0.25),
}
OTHER_ROUTES_LIMIT = (50, 1.0)


class TimedLog(list[T]):
    """A request log that stamps each appended item and tells its listeners at once."""

    def __init__(self, items: Iterable[T] = ()) -> None:
        super().__init__(items)
        now = time.perf_counter()
        self.stamps: list[float] = [now] * len(self)
        self.listeners: list[Callable[[T, float], None]] = []

    def append(self, item: T) -> None:
        now = ARRIVAL.get(None) or time.perf_counter()
        super().append(item)
        self.stamps.append(now)
        for listener in self.listeners:
            listener(item, now)

    def since(self, index: SupportsIndex) -> list[T]:
        return self[index:]


class StampArrival:
    """ASGI middleware: notes when each request reached the app (:data:`ARRIVAL`)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        token = ARRIVAL.set(time.perf_counter())
        try:
            await self.app(scope, receive, send)
        finally:
            ARRIVAL.reset(token)


class RealisticDiscord(FakeDiscord):
    """FakeDiscord with per-route bucket sizes (see :data:`ROUTE_LIMITS`)."""

    def _rate_limit(
        self, method: str, template: str, path: str, match: re.Match[str] | None
    ) -> dict[str, str]:
        group = self._route_group(method, template)
        self.route_limit, self.route_window = ROUTE_LIMITS.get(group, OTHER_ROUTES_LIMIT)
        return super()._rate_limit(method, template, path, match)


@dataclass
class World:
    """Everything a scenario needs."""

    discord: RealisticDiscord
    gateway: FakeGateway
    chatwoot: FakeChatwoot
    cfg: Config
    process: trio.Process
    http: httpx.AsyncClient
    discord_log: TimedLog[DiscordRequest]
    chatwoot_log: TimedLog[ChatwootRequest]
    users: list[str]
    stop: StopRecord
    posted_webhooks: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.webhook_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def add_users(self, count: int) -> list[str]:
        """``count`` more Discord users who can DM the bot."""
        first = FIRST_USER_ID + len(self.users)
        fresh = [str(first + i) for i in range(count)]
        for user_id in fresh:
            short = user_id[-5:]
            self.discord.add_user(user_id, f"user{short}", global_name=f"User {short}")
        self.users += fresh
        return fresh

    async def health(self) -> dict[str, Any]:
        response = await self.http.get(self.base_url + "/health")
        body: dict[str, Any] = response.json()
        return body

    async def store_batches(self) -> int:
        """The daemon's store transactions so far (``diswoot_store_batches_total``)."""
        response = await self.http.get(self.base_url + "/metrics")
        for line in response.text.splitlines():
            if line.startswith("diswoot_store_batches_total "):
                return int(float(line.split()[1]))
        return 0

    async def pending_jobs(self) -> int:
        queues = (await self.health()).get("queues", {})
        return sum(int(q.get("pending", 0)) for q in queues.values())

    async def wait_drained(self) -> None:
        """Return once the daemon's queues are empty (the caller bounds the wait).

        Polled every :data:`DRAIN_POLL` seconds: each ``/health`` costs the daemon ~1.5 ms of
        CPU, which the ``drained_*`` figures would charge to the messages.
        """
        while True:
            if await self.pending_jobs() == 0:
                return
            await trio.sleep(DRAIN_POLL)

    async def wait_drained_within(self, seconds: float) -> float | None:
        """:meth:`wait_drained` for at most ``seconds``; seconds waited, None if not drained."""
        start = time.perf_counter()
        with trio.move_on_after(seconds):
            await self.wait_drained()
            return round(time.perf_counter() - start, 3)
        return None

    async def post_webhook(self, body: bytes) -> WebhookAnswer:
        """POST a Chatwoot webhook body to the daemon, signed as Chatwoot signs it and, as
        Chatwoot does, on a connection of its own.

        A plain HTTP/1.1 client (h11 over a trio socket) rather than httpx: a new httpx
        connection per webhook cost this process ~3 ms of its own loop time per request,
        which the latency figures would have charged to the daemon.
        """
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Chatwoot-Timestamp": str(timestamp),
            "X-Chatwoot-Signature": self.chatwoot.sign(body, timestamp),
        }
        self.posted_webhooks += 1
        return await post_once(self.cfg.webhook_port, "/webhook", body, headers)


@dataclass
class WebhookAnswer:
    """The daemon's answer to one webhook."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def post_once(port: int, path: str, body: bytes, headers: dict[str, str]) -> WebhookAnswer:
    """One POST to 127.0.0.1:``port`` on a connection of its own (``Connection: close``)."""
    conn = h11.Connection(h11.CLIENT)
    fields = [("Host", f"127.0.0.1:{port}"), *headers.items(),
              ("Content-Length", str(len(body))), ("Connection", "close")]
    events = [h11.Request(method="POST", target=path, headers=fields), h11.Data(data=body),
              h11.EndOfMessage()]
    data = b"".join(conn.send(event) or b"" for event in events)
    status, chunks = 0, []
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    return WebhookAnswer(status, b"".join(chunks))


@dataclass
class StopRecord:
    """How the daemon ended: seconds from SIGTERM to exit, or killed after ``wait``."""

    wait: float
    seconds: float | None = None
    killed: bool = False


def free_port() -> int:
    """A TCP port that was free a moment ago (the daemon binds it right away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def daemon_process(
    cfg: Config, log_path: Path, stop: StopRecord
) -> AsyncIterator[trio.Process]:
    """``python -m diswoot`` configured like ``cfg``; SIGTERM, then SIGKILL after ``stop.wait``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in cfg.__dataclass_fields__}
    env.update(config_environment(cfg))
    env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("wb") as log:
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-m", "diswoot"],
                    env=env,
                    check=False,
                    stdout=log,
                    stderr=log,
                )
            )
            try:
                yield proc
            finally:
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        asked = time.perf_counter()
                        proc.terminate()
                        with trio.move_on_after(stop.wait):
                            await proc.wait()
                            stop.seconds = round(time.perf_counter() - asked, 3)
                    if proc.returncode is None:
                        stop.killed = True
                        proc.kill()
                nursery.cancel_scope.cancel()


async def _wait_ready(http: httpx.AsyncClient, url: str, proc: trio.Process) -> None:
    with trio.fail_after(READY_TIMEOUT):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"the daemon exited with status {proc.returncode}")
            try:
                response = await http.get(url + "/health")
                if response.json().get("ready"):
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


@asynccontextmanager
async def open_world(
    *,
    chatwoot_latency: float = 0.0,
    discord_latency: float = 0.0,
    log_dir: Path | None = None,
    stop_wait: float = 15.0,
    **config_overrides: Any,
) -> AsyncIterator[World]:
    """Fakes + a daemon process for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="diswoot-bench-") as tmp:
        tmp_path = Path(tmp)
        log_path = (log_dir or tmp_path) / "daemon.log"
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as http:
            discord = RealisticDiscord(latency=discord_latency)
            gateway = cast(FakeGateway, discord.gateway)
            chatwoot = FakeChatwoot(webhook_secret=WEBHOOK_SECRET, latency=chatwoot_latency)
            # The test suite checks every request against the OpenAPI specs; here that would
            # only make the fakes slower than the daemon they measure.
            discord.check_spec = chatwoot.check_spec = False
            discord_log = TimedLog[DiscordRequest]()
            chatwoot_log = TimedLog[ChatwootRequest]()
            discord.requests = discord_log
            chatwoot.requests = chatwoot_log
            chatwoot.app.asgi_app = StampArrival(chatwoot.app.asgi_app)  # type: ignore[method-assign]
            await discord.serve(nursery)
            await chatwoot.serve(nursery)
            overrides: dict[str, Any] = {"webhook_port": free_port(), "log_level": "INFO"}
            overrides.update(config_overrides)
            cfg = world_config(tmp_path / "diswoot.db", discord, chatwoot, **overrides)
            chatwoot.webhook_urls = [f"http://127.0.0.1:{cfg.webhook_port}/webhook"]
            stop = StopRecord(stop_wait)
            async with daemon_process(cfg, log_path, stop) as proc:
                await _wait_ready(http, f"http://127.0.0.1:{cfg.webhook_port}", proc)
                yield World(
                    discord=discord,
                    gateway=gateway,
                    chatwoot=chatwoot,
                    cfg=cfg,
                    process=proc,
                    http=http,
                    discord_log=discord_log,
                    chatwoot_log=chatwoot_log,
                    users=[],
                    stop=stop,
                )
            nursery.cancel_scope.cancel()
