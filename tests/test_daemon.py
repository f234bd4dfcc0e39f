"""``python -m diswoot`` as a real child process against the in-process fakes (127.0.0.1)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from diswoot import __version__
from diswoot.config import Config
from diswoot.store import open_store
from diswoot.store import queries as q
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.harness import (
    WEBHOOK_SECRET,
    daemon_environment,
    daemon_process,
    world_config,
)

UID = "80351110224678912"
START_TIMEOUT = 30
SECRETS = ("wrong-discord-token", "test-chatwoot-token", WEBHOOK_SECRET)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Fakes:
    discord: FakeDiscord
    chatwoot: FakeChatwoot
    cfg: Config
    http: httpx.AsyncClient

    @property
    def daemon_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.webhook_port}"

    async def health(self) -> httpx.Response | None:
        """GET /health of the child, or None while it does not listen yet."""
        try:
            return await self.http.get(self.daemon_url + "/health")
        except httpx.TransportError:
            return None

    async def wait_ready(self) -> dict[str, Any]:
        """Poll GET /health until the child reports ready (gateway up, Chatwoot reachable)."""
        with trio.fail_after(START_TIMEOUT):
            while True:
                response = await self.health()
                if response is not None and response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
                await trio.sleep(0.05)


@asynccontextmanager
async def fakes(tmp_path: Path, **overrides: Any) -> AsyncIterator[Fakes]:
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=5) as http:
        discord = FakeDiscord()
        chatwoot = FakeChatwoot(webhook_secret=WEBHOOK_SECRET)
        await discord.serve(nursery)
        await chatwoot.serve(nursery)
        values: dict[str, Any] = {"webhook_port": free_port(), **overrides}
        cfg = world_config(tmp_path / "diswoot.db", discord, chatwoot, **values)
        chatwoot.webhook_urls = [f"http://127.0.0.1:{cfg.webhook_port}/webhook"]
        try:
            yield Fakes(discord, chatwoot, cfg, http)
        finally:
            nursery.cancel_scope.cancel()


async def eventually(predicate: Callable[[], Any]) -> Any:
    """Poll ``predicate`` until it is truthy (the caller's fail_after bounds the wait)."""
    while True:
        value = predicate()
        if value:
            return value
        await trio.sleep(0.02)


async def run_to_exit(cfg: Config, *args: str) -> tuple[int, str]:
    """Run ``python -m diswoot ARGS`` configured like ``cfg`` to its end: (status, stderr)."""
    with trio.fail_after(START_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "diswoot", *args], env=daemon_environment(cfg), check=False,
            capture_stdout=True, capture_stderr=True,
        )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


async def test_starts_answers_health_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    async with fakes(tmp_path) as world, daemon_process(world.cfg) as proc:
        body = await world.wait_ready()
        assert body["gateway"]["state"] == "ready"
        assert body["chatwoot"]["reachable"] is True
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            await proc.wait()
        assert proc.returncode == 0
        assert await world.health() is None  # nothing listens any more
    assert (tmp_path / "diswoot.db").exists()


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` now (``SigCgt`` in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


async def test_a_sigterm_while_the_daemon_imports_exits_zero(tmp_path: Path) -> None:
    """``python -m diswoot`` handles SIGTERM before it imports the daemon (about a second): a
    SIGTERM the moment the handler is there arrives during the imports, is remembered and ends
    the start-up (exit 0), not the 143 of a process without a handler."""
    async with fakes(tmp_path) as world:
        stderr = tmp_path / "stderr.log"
        with stderr.open("wb") as err:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "diswoot"], env=daemon_environment(world.cfg),
                stdout=subprocess.DEVNULL, stderr=err,
            )
            try:
                with trio.fail_after(START_TIMEOUT):
                    await eventually(lambda: catches(proc.pid, signal.SIGTERM))
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
    assert proc.returncode == 0
    output = stderr.read_text()
    assert "received SIGTERM during start-up; stopping" in output, output
    assert "webhook server listening" not in output


async def test_a_dm_reaches_chatwoot_and_the_reply_comes_back(tmp_path: Path) -> None:
    async with fakes(tmp_path) as world, daemon_process(world.cfg) as proc:
        await world.wait_ready()
        world.discord.add_user(UID, "alice")
        world.discord.user_sends(UID, "hello from another process")
        with trio.fail_after(START_TIMEOUT):
            await eventually(lambda: world.chatwoot.messages)
            [message] = world.chatwoot.messages.values()
            assert message["content"] == "hello from another process"
            await world.chatwoot.agent_reply(message["conversation_id"], "answered")
            await eventually(lambda: any(m.get("content") == "answered"
                                         for m in world.discord.dm_messages(UID)))
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            await proc.wait()
        assert proc.returncode == 0
        assert world.chatwoot.violations == [] and world.discord.violations == []


async def test_a_token_revoked_while_running_exits_78_and_keeps_the_reply(
    tmp_path: Path,
) -> None:
    """The bot token is reset in the portal: REST answers 401.  The reply that met it is not
    dead-lettered; the daemon stops with 78 and the reply waits for a valid token."""
    async with fakes(tmp_path) as world, daemon_process(world.cfg) as proc:
        await world.wait_ready()
        world.discord.add_user(UID, "alice")
        world.discord.user_sends(UID, "hello")
        with trio.fail_after(START_TIMEOUT):  # forwarded, ✅ added, greeting sent
            await eventually(lambda: world.chatwoot.messages and world.discord.reactions)
            await eventually(lambda: world.discord.dm_messages(UID))
        [message] = world.chatwoot.messages.values()
        world.discord.token = "reset-in-the-portal"
        await world.chatwoot.agent_reply(message["conversation_id"], "are you there?")
        with trio.fail_after(START_TIMEOUT):
            await proc.wait()
        assert proc.returncode == 78
    async with open_store(world.cfg.db_path) as store:
        pending = await store.call(q.list_jobs, ("pending",), "outbound")
        dead = await store.call(q.list_jobs, ("dead",))
    assert [job.kind for job in pending] == ["reply"] and dead == []


async def test_a_chatwoot_token_revoked_while_running_exits_78_and_keeps_the_dm(
    tmp_path: Path,
) -> None:
    """An administrator regenerates the access token: Chatwoot answers 401 "Invalid Access
    Token".  The DM that met it is not dead-lettered; the daemon stops with 78, and the next
    start with the valid token forwards the DM once."""
    async with fakes(tmp_path) as world:
        async with daemon_process(world.cfg) as proc:
            await world.wait_ready()
            world.discord.add_user(UID, "alice")
            world.chatwoot.api_token = "regenerated-in-the-profile"
            world.discord.user_sends(UID, "hello")
            with trio.fail_after(START_TIMEOUT):
                await proc.wait()
            assert proc.returncode == 78
        assert world.chatwoot.messages == {}
        async with open_store(world.cfg.db_path) as store:
            pending = await store.call(q.list_jobs, ("pending",), "inbound")
            dead = await store.call(q.list_jobs, ("dead",))
        assert [job.kind for job in pending] == ["message"] and dead == []
        world.chatwoot.api_token = world.cfg.chatwoot_api_token
        async with daemon_process(world.cfg):
            with trio.fail_after(START_TIMEOUT):
                await eventually(lambda: world.chatwoot.messages)
                await world.wait_ready()
            await eventually(lambda: world.discord.reactions)
        assert [m["content"] for m in world.chatwoot.messages.values()] == ["hello"]


async def test_rejected_discord_token_exits_78_with_an_actionable_message(
    tmp_path: Path,
) -> None:
    async with fakes(tmp_path, discord_token="wrong-discord-token") as world:
        status, output = await run_to_exit(world.cfg)
    assert status == 78, output
    assert "Traceback" not in output
    assert "DISCORD_TOKEN" in output
    assert "Developer Portal" in output
    for secret in SECRETS:
        assert secret not in output


async def test_an_unusable_database_path_exits_78_naming_it(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    async with fakes(tmp_path, diswoot_db_path=str(tmp_path / "a-file" / "diswoot.db")) as world:
        status, output = await run_to_exit(world.cfg)
    assert status == 78, output
    assert "DISWOOT_DB_PATH" in output and "Traceback" not in output


async def test_an_address_that_cannot_be_bound_exits_78_naming_it(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for host, busy_port in (("192.0.2.1", free_port()), ("127.0.0.1", port)):
            async with fakes(tmp_path, webhook_host=host, webhook_port=busy_port) as world:
                status, output = await run_to_exit(world.cfg)
            assert status == 78, output
            assert "WEBHOOK_HOST" in output and "Traceback" not in output, output


async def test_gateway_close_4004_exits_78(tmp_path: Path) -> None:
    """REST accepts the token but the gateway rejects it (close code 4004)."""
    async with fakes(tmp_path) as world:
        world.discord.gateway.token = "something-else"  # type: ignore[attr-defined]
        status, output = await run_to_exit(world.cfg)
    assert status == 78, output
    assert "Traceback" not in output
    assert "the token was rejected" in output and "DISCORD_TOKEN" in output


async def test_missing_configuration_exits_78_naming_every_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "CHATWOOT_"))}
    env["CHATWOOT_ACCOUNT_ID"] = "not-a-number"
    with trio.fail_after(START_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "diswoot"], env=env, cwd=tmp_path, check=False,
            capture_stdout=True, capture_stderr=True,
        )
    stderr = result.stderr.decode()
    assert result.returncode == 78
    assert "Traceback" not in stderr
    for name in ("DISCORD_TOKEN", "DISCORD_CLIENT_ID", "CHATWOOT_BASE_URL",
                 "CHATWOOT_ACCOUNT_ID", "CHATWOOT_API_TOKEN", "CHATWOOT_INBOX_ID"):
        assert name in stderr


async def test_help_and_version_exit_zero(tmp_path: Path) -> None:
    async with fakes(tmp_path) as world:
        status, output = await run_to_exit(world.cfg, "--help")
        assert status == 0, output
        for command in ("run", "deploy-commands", "check", "queue", "sandbox"):
            assert command in output
        status, output = await run_to_exit(world.cfg, "--version")
        assert status == 0, output
        assert output.strip() == f"diswoot {__version__}"
