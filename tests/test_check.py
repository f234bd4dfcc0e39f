"""``diswoot check`` against healthy and broken fakes (real sockets on 127.0.0.1)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from diswoot.check import check_cli, run_checks
from diswoot.config import Config
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.harness import world_config

TIMEOUT = 20
UNUSED_DB = Path("/nonexistent/diswoot.db")  # check never opens the database
SECRETS = ("test-token", "test-chatwoot-token", "wrong-discord-token", "wrong-chatwoot-token")


@dataclass
class Fakes:
    discord: FakeDiscord
    chatwoot: FakeChatwoot

    def config(self, **overrides: Any) -> Config:
        return world_config(UNUSED_DB, self.discord, self.chatwoot, **overrides)


async def serve_fakes(
    nursery: trio.Nursery, *, inbox: dict[str, Any] | None = None
) -> Fakes:
    discord = FakeDiscord()
    chatwoot = FakeChatwoot(inbox=inbox)
    await discord.serve(nursery)
    await chatwoot.serve(nursery)
    return Fakes(discord, chatwoot)


@pytest.fixture
async def fakes(nursery: trio.Nursery) -> AsyncIterator[Fakes]:
    yield await serve_fakes(nursery, inbox={"csat_survey_enabled": True})


async def check(cfg: Config) -> tuple[int, str]:
    """Run the real ``check_cli`` (its own trio.run) in a thread while the fakes serve here."""
    out = io.StringIO()
    with trio.fail_after(TIMEOUT):
        status = await trio.to_thread.run_sync(check_cli, cfg, out)
    text = out.getvalue()
    for secret in SECRETS:
        assert secret not in text
    return status, text


def problems(text: str) -> list[tuple[str, str]]:
    """(FAIL line, the fix line under it) pairs of a rendered report."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("[FAIL]"):
            fix = lines[index + 1] if index + 1 < len(lines) else ""
            assert fix.lstrip().startswith("-> "), f"no fix under {line!r}"
            found.append((line, fix.strip()[3:]))
    return found


async def test_healthy_setup_exits_zero_with_every_line_ok(fakes: Fakes) -> None:
    status, text = await check(fakes.config())
    assert status == 0, text
    report = [line for line in text.splitlines() if line.startswith("[")]
    assert report and all(line.startswith("[  ok]") for line in report), text
    for expected in (
        "Discord token belongs to bot diswoot-bot (1100000000000000000)",
        "matches DISCORD_CLIENT_ID",
        "identifies left today",
        f"Chatwoot reachable at {fakes.chatwoot.base_url} (version 4.15.1)",
        "Chatwoot token belongs to Diswoot Bridge",
        "inbox 'Discord' is an API inbox",
        "CSAT on, lock to single conversation off, working hours off",
        "X-Chatwoot-Signature",
    ):
        assert expected in text, expected
    assert text.rstrip().endswith("all good: 0 failed, 0 warning(s)")


async def test_inbox_settings_are_shown(nursery: trio.Nursery) -> None:
    fakes = await serve_fakes(nursery, inbox={
        "csat_survey_enabled": True, "lock_to_single_conversation": True,
        "working_hours_enabled": True, "timezone": "Europe/Berlin", "greeting_enabled": True,
    })
    status, text = await check(fakes.config())
    assert status == 0, text
    assert ("CSAT on, lock to single conversation on, working hours on (Europe/Berlin), "
            "greeting on") in text


@pytest.mark.parametrize(
    ("broken", "failure", "fix"),
    [
        ({"discord_token": "wrong-discord-token"}, "Discord token", "DISCORD_TOKEN"),
        ({"discord_client_id": "1234"}, "DISCORD_CLIENT_ID is 1234",
         "set DISCORD_CLIENT_ID=1200000000000000000"),
        ({"chatwoot_api_token": "wrong-chatwoot-token"}, "Chatwoot token", "Access Token"),
        ({"chatwoot_inbox_id": 99}, "Chatwoot inbox 99", "CHATWOOT_INBOX_ID"),
        ({"chatwoot_account_id": 5}, "not a member of account 5", "use one of the accounts [1]"),
        ({"chatwoot_base_url": "http://127.0.0.1:1"}, "unreachable", "CHATWOOT_BASE_URL"),
    ],
)
async def test_each_broken_setting_fails_with_a_fix(
    fakes: Fakes, broken: dict[str, Any], failure: str, fix: str
) -> None:
    status, text = await check(fakes.config(**broken))
    assert status == 1, text
    found = problems(text)
    assert len(found) == 1, text
    line, how = found[0]
    assert failure in line
    assert fix in how
    assert "problems found: 1 failed" in text


async def test_non_api_inbox_fails(nursery: trio.Nursery) -> None:
    fakes = await serve_fakes(nursery, inbox={"channel_type": "Channel::WebWidget"})
    status, text = await check(fakes.config())
    assert status == 1
    [(line, fix)] = problems(text)
    assert "Channel::WebWidget" in line
    assert "create an API inbox" in fix


async def test_chatwoot_down_fails(fakes: Fakes) -> None:
    fakes.chatwoot.down = True
    status, text = await check(fakes.config())
    assert status == 1
    [(line, fix)] = problems(text)
    assert "Chatwoot" in line and "503" in line
    assert "CHATWOOT_BASE_URL" in fix


async def test_discord_unreachable_and_low_identify_budget(fakes: Fakes) -> None:
    fakes.discord.gateway.session_start_limit["remaining"] = 3
    status, text = await check(fakes.config())
    assert status == 1
    [(line, fix)] = problems(text)
    assert "3/1000 identifies left" in line
    assert "identify budget" in fix

    status, text = await check(fakes.config(discord_api_base_url="http://127.0.0.1:1/api/v10"))
    assert status == 1
    [(line, fix)] = problems(text)
    assert "Discord token: unreachable" in line


async def test_several_problems_are_all_reported(fakes: Fakes) -> None:
    status, text = await check(
        fakes.config(discord_client_id="1234", chatwoot_inbox_id=99, webhook_secret="")
    )
    assert status == 1
    assert len(problems(text)) == 2
    assert "[warn] POST /webhook accepts unauthenticated requests" in text
    assert "problems found: 2 failed, 1 warning(s)" in text


async def test_csat_mismatch_is_a_warning_only(nursery: trio.Nursery) -> None:
    fakes = await serve_fakes(nursery)  # the inbox has CSAT off, CSAT_ENABLED defaults to true
    status, text = await check(fakes.config())
    assert status == 0
    assert "[warn] CSAT_ENABLED=true but the inbox has CSAT disabled" in text
    assert "all good: 0 failed, 1 warning(s)" in text
    status, text = await check(fakes.config(csat_enabled=False))
    assert "[warn]" not in text


async def test_run_checks_returns_a_report(fakes: Fakes) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            report = await run_checks(fakes.config(csat_enabled=True), http)
    assert not report.failed
    assert all(level == "ok" for level, _, _ in report.lines)
    assert fakes.discord.violations == [] and fakes.chatwoot.violations == []
