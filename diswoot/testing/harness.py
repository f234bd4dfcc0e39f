"""End-to-end harness: the real daemon against the fakes, over real sockets on 127.0.0.1.

Used by the test suite, the sandbox and the benchmark::

    async with bridge_world(tmp_path) as world:        # fakes + daemon in this trio run
        world.discord.add_user("80351110224678912", "alice")
        world.discord.user_sends("80351110224678912", "my order is late")
        await world.wait_for(lambda: world.chatwoot.messages_in(1))

``world.restart()`` stops the daemon gracefully and starts a new one on the same database;
``world.crash()`` cancels it abruptly (no graceful shutdown) to imitate a kill.  For a real
SIGKILL of a separate process use :func:`daemon_process`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from diswoot.config import Config, test_config
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.fake_gateway import FakeGateway

WEBHOOK_SECRET = "test-webhook-secret"  # noqa: S105 - the fakes' shared test secret


@dataclass
class World:
    """The fakes, the running daemon and handy helpers."""

    discord: FakeDiscord
    chatwoot: FakeChatwoot
    cfg: Config
    nursery: trio.Nursery
    http: httpx.AsyncClient
    daemon: Any = None  # diswoot.service.Daemon
    _scope: trio.CancelScope | None = None
    _done: trio.Event = field(default_factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    async def start(self) -> None:
        """Start a daemon on ``self.cfg`` and point Chatwoot's webhooks at it."""
        self._done = trio.Event()
        self.daemon = await self.nursery.start(self._run_daemon)
        token = self.cfg.webhook_path_token
        path = f"/webhook/{token}" if token and not self.cfg.webhook_secret else "/webhook"
        self.chatwoot.webhook_urls = [f"{self.base_url}{path}"]

    async def _run_daemon(self, task_status: trio.TaskStatus[Any]) -> None:
        from diswoot import service

        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                await service.run(self.cfg, handle_signals=False, task_status=task_status)
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Graceful shutdown, as on SIGTERM."""
        if self.daemon is not None:
            self.daemon.stop()
            await self._done.wait()
            self.daemon = None

    async def crash(self) -> None:
        """Abrupt end: every task is cancelled, no graceful shutdown path runs."""
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()
            self.daemon = None

    async def restart(self, **overrides: Any) -> None:
        await self.stop()
        if overrides:
            self.cfg = self.cfg.replace(**overrides)
        await self.start()

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline across processes
        poll: float = 0.01,
    ) -> Any:
        """Wait until ``predicate()`` is truthy (returns it); fails after ``timeout``.

        For state that changes in another task or process (the fakes' request logs); every
        test still runs under its own ``trio.fail_after`` ceiling.
        """
        with trio.fail_after(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                await trio.sleep(poll)

    async def wait_delivered(self, message_id: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the bridge marked Chatwoot message ``message_id`` as delivered."""
        await self.wait_for(
            lambda: self.chatwoot.messages[message_id]["status"] == "delivered", timeout=timeout
        )

    async def acknowledged_seq(self) -> int:
        """The seq the gateway client acknowledges once every dispatch so far was handled.

        Requests heartbeats (op 1) until the answer names the fake gateway's last seq, or
        for ten seconds; the bot's own messages may still be arriving as dispatches.
        """
        fake = self.discord.gateway
        assert isinstance(fake, FakeGateway), "needs the socket gateway fake"
        with trio.move_on_after(10):
            while True:
                fake.send_op(1, None)
                await self.wait_for(partial(_grew, fake.heartbeats, len(fake.heartbeats)))
                if fake.heartbeats[-1]["d"] == fake.last_seq:
                    break
                await trio.sleep(0.02)
        return int(fake.heartbeats[-1]["d"])

    async def post_webhook(
        self, body: bytes, headers: Mapping[str, str] | None = None, path: str = "/webhook"
    ) -> httpx.Response:
        return await self.http.post(
            self.base_url + path,
            content=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )


def world_config(
    db_path: Path, discord: FakeDiscord, chatwoot: FakeChatwoot, **overrides: Any
) -> Config:
    values: dict[str, Any] = {
        "diswoot_db_path": str(db_path),
        "discord_api_base_url": discord.api_base_url,
        "chatwoot_base_url": chatwoot.base_url,
        "chatwoot_account_id": chatwoot.account_id,
        "chatwoot_inbox_id": chatwoot.inbox_id,
        "webhook_secret": WEBHOOK_SECRET,
        "backfill_hours": 72,
        "reconcile_interval_seconds": 0,
    }
    values.update(overrides)
    return test_config(**values)


@asynccontextmanager
async def bridge_world(
    tmp_path: Path,
    *,
    start: bool = True,
    discord_options: Mapping[str, Any] | None = None,
    chatwoot_options: Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> AsyncIterator[World]:
    """Fakes + daemon (+ an HTTP client) for the duration of the block."""
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as http:
        discord = FakeDiscord(**dict(discord_options or {}))
        chatwoot_kw: dict[str, Any] = {"webhook_secret": WEBHOOK_SECRET}
        chatwoot_kw.update(chatwoot_options or {})
        chatwoot = FakeChatwoot(**chatwoot_kw)
        await discord.serve(nursery)
        await chatwoot.serve(nursery)
        cfg = world_config(tmp_path / "diswoot.db", discord, chatwoot, **config_overrides)
        world = World(discord=discord, chatwoot=chatwoot, cfg=cfg, nursery=nursery, http=http)
        if start:
            await world.start()
        try:
            yield world
        finally:
            await world.stop()
            nursery.cancel_scope.cancel()


def config_environment(cfg: Config) -> dict[str, str]:
    """Environment variables that reproduce ``cfg`` for a daemon subprocess."""
    env: dict[str, str] = {}
    for name in cfg.__dataclass_fields__:
        value = getattr(cfg, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif name.startswith("color_"):
            text = f"{value:06X}"
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        env[name.upper()] = text
    return env


def daemon_environment(
    cfg: Config, extra_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment with ``cfg``'s variables instead of any of its own."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in cfg.__dataclass_fields__}
    env.update(config_environment(cfg))
    env.update(extra_env or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@asynccontextmanager
async def daemon_process(
    cfg: Config, *, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[trio.Process]:
    """``python -m diswoot`` as a real child process configured like ``cfg``."""
    env = daemon_environment(cfg, extra_env)
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-m", "diswoot"],
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=None,
            )
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            nursery.cancel_scope.cancel()


def _grew(items: list[Any], size: int) -> bool:
    return len(items) > size
