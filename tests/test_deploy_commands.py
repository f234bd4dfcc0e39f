"""``diswoot deploy-commands`` against FakeDiscord: the payload, the output, the failures."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from diswoot.bridge.commands import COMMAND_DEFINITIONS
from diswoot.bridge.deploy import deploy_commands, deploy_commands_cli
from diswoot.config import EX_CONFIG, Config, test_config
from diswoot.rest.client import DiscordRest
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.harness import config_environment

CEILING = 20


@pytest.fixture
async def discord(nursery: trio.Nursery) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.serve(nursery)
    yield fake
    fake.close()


def cli_config(discord: FakeDiscord, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "discord_api_base_url": discord.api_base_url,
        "discord_token": discord.token,
        "discord_client_id": discord.application_id,
    }
    values.update(overrides)
    return test_config(**values)


async def run_cli(cfg: Config) -> tuple[int, str, str]:
    """deploy_commands_cli in a worker thread (it runs its own trio.run)."""
    out, err = io.StringIO(), io.StringIO()
    status = await trio.to_thread.run_sync(lambda: deploy_commands_cli(cfg, out=out, err=err))
    return status, out.getvalue(), err.getvalue()


def puts(discord: FakeDiscord) -> list[Any]:
    return [r for r in discord.requests if r.method == "PUT"]


async def test_deploy_commands_payload(discord: FakeDiscord) -> None:
    with trio.fail_after(CEILING):
        async with httpx.AsyncClient() as http:
            rest = DiscordRest(http, base_url=discord.api_base_url, token=discord.token)
            registered = await deploy_commands(rest, discord.application_id)
            again = await deploy_commands(rest, discord.application_id)  # idempotent overwrite
    (first, second) = puts(discord)
    assert first.path == f"/applications/{discord.application_id}/commands"
    assert first.json == COMMAND_DEFINITIONS == second.json
    assert discord.violations == []
    assert [c["name"] for c in registered] == ["status", "close", "reopen", "help"]
    assert [c["id"] for c in again] == [c["id"] for c in registered]
    assert [c["name"] for c in discord.commands] == ["status", "close", "reopen", "help"]
    close = next(c for c in discord.commands if c["name"] == "close")
    assert close["contexts"] == [1] and close["integration_types"] == [0]
    assert close["options"][0]["name"] == "reason" and close["options"][0]["required"] is False


async def test_cli_prints_what_it_registered(discord: FakeDiscord) -> None:
    with trio.fail_after(CEILING):
        status, out, err = await run_cli(cli_config(discord))
    assert status == 0, err
    assert "Registered 4 global slash commands" in out
    assert "/close [reason] - Close your support ticket" in out
    for command in discord.commands:
        assert f"/{command['name']}" in out and command["id"] in out
    assert discord.token not in out + err
    assert discord.violations == []


@pytest.mark.parametrize(
    ("overrides", "fail", "status", "message"),
    [
        ({"discord_token": "wrong-token"}, None, EX_CONFIG, "rejected the bot token (401"),
        (
            {"discord_client_id": "1234567890123456789"},
            None,
            EX_CONFIG,
            "DISCORD_CLIENT_ID must be the application id",
        ),
        ({}, (400, 50035), 1, "rejected the command list (HTTP 400 code 50035"),
        ({}, (503, None), 1, "Discord is unreachable or failing"),
    ],
)
async def test_cli_failures(
    discord: FakeDiscord,
    overrides: dict[str, Any],
    fail: tuple[int, int | None] | None,
    status: int,
    message: str,
) -> None:
    if fail is not None:
        discord.fail_next("PUT", r"/commands$", fail[0], code=fail[1], times=10)
    with trio.fail_after(CEILING):
        code, out, err = await run_cli(cli_config(discord, **overrides))
    assert code == status
    assert message in err
    assert out == ""
    assert discord.commands == []
    assert "wrong-token" not in err


async def test_cli_when_discord_is_unreachable() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = test_config(discord_api_base_url=f"http://127.0.0.1:{port}/api/v10")
    with trio.fail_after(CEILING):
        code, out, err = await run_cli(cfg)
    assert code == 1
    assert "Discord is unreachable or failing" in err and "DISCORD_API_BASE_URL" in err
    assert out == ""


async def test_diswoot_deploy_commands_subprocess(discord: FakeDiscord, tmp_path: Path) -> None:
    """The real command line: configuration from the environment, exit status, output."""
    env = {k: v for k, v in os.environ.items() if k not in Config.__dataclass_fields__}
    env.update({k.upper(): v for k, v in config_environment(cli_config(discord)).items()})
    command = [sys.executable, "-m", "diswoot", "deploy-commands"]
    with trio.fail_after(CEILING):
        ok = await trio.run_process(
            command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False
        )
        env["DISCORD_TOKEN"] = "wrong-token"
        bad = await trio.run_process(
            command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False
        )
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"Registered 4 global slash commands" in ok.stdout
    assert bad.returncode == EX_CONFIG
    assert b"rejected the bot token" in bad.stderr
    assert b"wrong-token" not in bad.stderr
    assert [c["name"] for c in discord.commands] == ["status", "close", "reopen", "help"]
    assert discord.violations == []
