"""``diswoot check`` against healthy and broken fakes (real sockets on 127.0.0.1)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from diswoot.check import check_cli, environment_notes, run_checks
from diswoot.config import EX_CONFIG, Config
from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_discord import FakeDiscord
from diswoot.testing.harness import config_environment, world_config

TIMEOUT = 20
REPO = Path(__file__).resolve().parent.parent
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
    assert len(problems(text)) == 3
    assert "[FAIL] POST /webhook would accept unauthenticated requests" in text
    assert "problems found: 3 failed, 0 warning(s)" in text


async def test_unauthenticated_webhooks_fail_unless_explicitly_allowed(fakes: Fakes) -> None:
    status, text = await check(fakes.config(webhook_secret=""))
    assert status == 1
    [(line, fix)] = problems(text)
    assert "`diswoot run` refuses to start" in line
    assert "WEBHOOK_SECRET" in fix and "WEBHOOK_PATH_TOKEN" in fix
    status, text = await check(
        fakes.config(webhook_secret="", webhook_allow_unauthenticated=True)
    )
    assert status == 0, text
    assert "[warn] POST /webhook accepts unauthenticated requests" in text


async def test_valid_but_doubtful_settings_are_warnings(fakes: Fakes) -> None:
    status, text = await check(
        fakes.config(csat_question="How would you rate the help you got from our team today?",
                     attachment_max_mb=100)
    )
    assert status == 0, text
    assert "[warn] CSAT_QUESTION is longer than 45 characters" in text
    assert "[warn] ATTACHMENT_MAX_MB=100 is above Chatwoot's default upload limit (40 MB)" in text
    assert "all good: 0 failed, 2 warning(s)" in text


def test_environment_notes_name_pasted_comments_and_ignored_lines(tmp_path: Path) -> None:
    env_file = tmp_path / "diswoot.env"
    env_file.write_text("export LOG_LEVEL=debug\nBRAND_NAME=Acme  # our brand\n", "utf-8")
    env = {"BRAND_NAME": "Acme  # our brand", "WEBHOOK_SECRET": "# the secret",
           "COLOR_INFO": "#A89EF5", "GREETING_MESSAGE": "We are #1", "OTHER": "# not ours"}
    notes = environment_notes(env, env_file)
    whats = [what for what, _ in notes]
    assert whats == [
        f"{env_file}: line 1: `export LOG_LEVEL=` is ignored: environment files have no "
        "`export`; write `NAME=value`",
        "WEBHOOK_SECRET looks like a pasted comment (it starts with # or holds ' # ')",
        "BRAND_NAME looks like a pasted comment (it starts with # or holds ' # ')",
    ]
    assert all("the secret" not in what for what in whats)
    assert "own lines" in notes[1][1]
    assert environment_notes({}, tmp_path / "absent.env") == []


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``python -m diswoot ARGS`` in ``tmp_path`` with this tree's code and no DISCORD_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "CHATWOOT_"))}
    env["PYTHONPATH"] = str(REPO)
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "diswoot", *args], cwd=tmp_path, env=env,
            capture_stdout=True, capture_stderr=True, check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_check_reads_an_env_file_like_systemd(fakes: Fakes, tmp_path: Path) -> None:
    env = config_environment(fakes.config())
    env["BRAND_NAME"] = "Acme  # our brand"
    lines = [f"# {name}\n{name}={value}" for name, value in env.items()]
    (tmp_path / "diswoot.env").write_text("\n".join(lines), encoding="utf-8")
    status, out, err = await run_cli(tmp_path, "check", "--env-file", "diswoot.env")
    assert status == 0, out + err
    assert "[warn] BRAND_NAME looks like a pasted comment" in out
    assert "all good: 0 failed, 1 warning(s)" in out


async def test_check_points_at_a_pasted_comment_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "diswoot.env").write_text(
        "DISCORD_TOKEN=   # Bot token from the Developer Portal\n"
        "export CHATWOOT_INBOX_ID=7\n", encoding="utf-8")
    status, out, err = await run_cli(tmp_path, "check", "--env-file", "diswoot.env")
    assert status == EX_CONFIG
    assert "DISCORD_TOKEN is invalid" in err and "looks like a pasted comment" in err
    assert "note: diswoot.env: line 2: `export CHATWOOT_INBOX_ID=` is ignored" in err
    assert "note: DISCORD_TOKEN looks like a pasted comment" in err
    assert "Bot token from" not in out + err
    status, _, err = await run_cli(tmp_path, "check", "--env-file", "missing.env")
    assert status == EX_CONFIG and "missing.env: no such file" in err


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
