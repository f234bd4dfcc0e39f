"""Configuration: every variable typed, every problem reported at once, no secret leaked."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from diswoot.config import (
    EX_CONFIG,
    REQUIRED,
    Config,
    ConfigError,
    load_config,
    parse_dotenv,
    read_environment,
    test_config,
    webhook_auth_problem,
)
from diswoot.config_values import PRESENCE_TEXT_MAX
from diswoot.gateway.events import Presence
from diswoot.testing.harness import config_environment

REPO = Path(__file__).resolve().parent.parent

VALID = {
    "DISCORD_TOKEN": "abc.def.ghi",
    "DISCORD_CLIENT_ID": "1200000000000000000",
    "CHATWOOT_BASE_URL": "https://chat.example.com/",
    "CHATWOOT_ACCOUNT_ID": "1",
    "CHATWOOT_API_TOKEN": "cw-token",
    "CHATWOOT_INBOX_ID": "7",
    "WEBHOOK_PATH_TOKEN": "a-long-random-path-token",
}


def test_defaults_match_the_original(tmp_path: Path) -> None:
    cfg = load_config(VALID, dotenv=None)
    assert cfg.webhook_port == 3000
    assert cfg.webhook_host == "0.0.0.0"
    assert cfg.discord_api_base_url == "https://discord.com/api/v10"
    assert cfg.diswoot_db_path == "data/diswoot.db"
    assert cfg.log_level == "INFO"
    assert cfg.confirm_emoji == "✅"
    assert cfg.reopen_window_hours == 0
    assert cfg.outside_hours_behavior is True
    assert cfg.presence_poll_interval_ms == 300000
    assert cfg.color_primary == 0x7BB8F5
    assert cfg.csat_button_label == "⭐ Rate us"
    assert cfg.backfill_hours == 72 and cfg.reconcile_interval_seconds == 120
    assert cfg.attachment_max_mb == 40 and cfg.discord_upload_limit_mb == 10
    assert cfg.footer_text == "Support"
    # URLs lose their trailing slash
    assert cfg.chatwoot_base_url == "https://chat.example.com"


def test_types_are_parsed() -> None:
    cfg = load_config(
        {
            **VALID,
            "COLOR_SUCCESS": "#00ff00",
            "COLOR_DANGER": "ff0000",
            "CSAT_ENABLED": "false",
            "GREETING_ENABLED": "TRUE",
            "WEBHOOK_PORT": "8080",
            "REOPEN_WINDOW_HOURS": "24",
            "DISCORD_TOKEN": "Bot abc.def",
            "SNOOZED_MESSAGE": "",
            "BRAND_FOOTER_TEXT": "Acme support",
        },
        dotenv=None,
    )
    assert cfg.color_success == 0x00FF00 and cfg.color_danger == 0xFF0000
    assert cfg.csat_enabled is False and cfg.greeting_enabled is True
    assert cfg.webhook_port == 8080 and cfg.reopen_window_hours == 24
    assert cfg.discord_token == "abc.def"  # a pasted "Bot " prefix is tolerated
    assert cfg.snoozed_message == ""  # blank disables that notice
    assert cfg.footer_text == "Acme support"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {"WEBHOOK_PORT": "http", "COLOR_INFO": "purple", "CSAT_ENABLED": "maybe"},
            dotenv=None,
        )
    text = str(info.value)
    for name in (*REQUIRED, "WEBHOOK_PORT", "COLOR_INFO", "CSAT_ENABLED"):
        assert name in text
    assert len(info.value.problems) == len(REQUIRED) + 3


def test_secrets_never_appear_in_errors_or_repr() -> None:
    secret = "super secret token"  # invalid: contains spaces
    with pytest.raises(ConfigError) as info:
        load_config({**VALID, "DISCORD_TOKEN": secret}, dotenv=None)
    assert "DISCORD_TOKEN" in str(info.value)
    assert secret not in str(info.value)
    cfg = load_config({**VALID, "WEBHOOK_SECRET": "hush-hush"}, dotenv=None)
    assert "hush-hush" not in repr(cfg) and "cw-token" not in repr(cfg)


def test_unauthenticated_webhooks_are_refused_unless_explicitly_allowed() -> None:
    bare = {k: v for k, v in VALID.items() if k != "WEBHOOK_PATH_TOKEN"}
    problem = webhook_auth_problem(load_config(bare, dotenv=None))
    assert problem is not None
    assert "WEBHOOK_SECRET" in problem and "WEBHOOK_PATH_TOKEN" in problem
    assert webhook_auth_problem(load_config({**bare, "WEBHOOK_SECRET": "s"}, dotenv=None)) is None
    assert webhook_auth_problem(load_config(VALID, dotenv=None)) is None
    allowed = load_config({**bare, "WEBHOOK_ALLOW_UNAUTHENTICATED": "true"}, dotenv=None)
    assert allowed.webhook_allow_unauthenticated is True
    assert webhook_auth_problem(allowed) is None
    refused = load_config({**bare, "WEBHOOK_ALLOW_UNAUTHENTICATED": "false"}, dotenv=None)
    assert webhook_auth_problem(refused) is not None


def test_unauthenticated_configuration_exits_78_naming_both_variables(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **VALID}
    del env["WEBHOOK_PATH_TOKEN"]
    proc = subprocess.run(
        [sys.executable, "-m", "diswoot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EX_CONFIG
    assert "WEBHOOK_SECRET" in proc.stderr and "WEBHOOK_PATH_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_chatwoot_media_hosts_are_parsed() -> None:
    cfg = load_config(
        {**VALID, "CHATWOOT_MEDIA_HOSTS": " Files.Example.com, https://cdn.example.net:8443/x ,"},
        dotenv=None,
    )
    assert cfg.chatwoot_media_hosts == ("files.example.com", "cdn.example.net:8443")
    assert load_config(VALID, dotenv=None).chatwoot_media_hosts == ()
    with pytest.raises(ConfigError) as info:
        load_config({**VALID, "CHATWOOT_MEDIA_HOSTS": "not a host"}, dotenv=None)
    assert "CHATWOOT_MEDIA_HOSTS" in str(info.value)


def test_dotenv_is_read_like_the_originals_and_the_environment_wins(tmp_path: Path) -> None:
    """./.env: systemd's rules plus the original project's dotenv habits (a `` # note`` after
    a value, ``export``), so its .env.example works when copied."""
    dotenv = tmp_path / ".env"
    lines = [f"{k}={v}" for k, v in VALID.items()]
    lines += [
        "# a comment line",
        "BRAND_NAME=Acme              # Short name shown in every embed footer",
        "BRAND_FOOTER_TEXT=           # Override the full footer text",
        "COLOR_PRIMARY=7BB8F5         # pastel blue",
        'GREETING_MESSAGE="Hello # not a comment"  # but this is',
        "WEBHOOK_PORT=4000",
        "export LOG_LEVEL=debug",
        "CSAT_QUESTION='  spaces kept  '",
        "COLOR_INFO=#A89EF5",  # no space before the #: a value
    ]
    dotenv.write_text("\n".join(lines), encoding="utf-8")
    cfg = load_config({"WEBHOOK_PORT": "5000"}, dotenv=dotenv)
    assert cfg.brand_name == "Acme"
    assert cfg.brand_footer_text == ""  # blank: the default footer
    assert cfg.color_primary == 0x7BB8F5 and cfg.color_info == 0xA89EF5
    assert cfg.greeting_message == "Hello # not a comment"
    assert cfg.webhook_port == 5000  # real environment wins
    assert cfg.log_level == "DEBUG"
    assert cfg.csat_question == "  spaces kept  "


def test_an_env_file_for_systemd_is_read_as_systemd_reads_it(tmp_path: Path) -> None:
    """``--env-file``: the unit's file, so exactly systemd's rules (no inline comments)."""
    env_file = tmp_path / "diswoot.env"
    lines = [f"{k}={v}" for k, v in VALID.items()]
    lines += ["BRAND_NAME=Acme  # kept", "export LOG_LEVEL=debug"]
    env_file.write_text("\n".join(lines), encoding="utf-8")
    env = read_environment({}, env_file, as_systemd=True)
    assert env["BRAND_NAME"] == "Acme  # kept"  # systemd keeps it
    assert "LOG_LEVEL" not in env  # not a valid name for systemd: ignored


def test_a_pasted_comment_is_named_without_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**VALID, "DISCORD_TOKEN": "# Bot token from the portal",
                     "WEBHOOK_SECRET": "# the webhook's secret"}, dotenv=None)
    text = str(info.value)
    assert text.count("looks like a pasted comment") == 2
    assert "DISCORD_TOKEN" in text and "WEBHOOK_SECRET" in text
    assert "Bot token from" not in text and "the webhook's secret" not in text


def test_a_dotenv_with_invalid_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"BRAND_NAME=Caf\xe9\n")
    with pytest.raises(ConfigError, match="line 1: invalid UTF-8"):
        load_config(VALID, dotenv=dotenv)


def test_env_example_documents_every_variable() -> None:
    documented = parse_dotenv((REPO / ".env.example").read_text(encoding="utf-8"))
    names = {f.name.upper() for f in dataclasses.fields(Config)}
    assert names == set(documented)
    assert "REOPENED_MESSAGE" in documented


def test_cli_exits_78_listing_every_bad_variable_without_secrets(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "DISCORD_TOKEN": "has a secret space", "WEBHOOK_PORT": "x"}
    proc = subprocess.run(
        [sys.executable, "-m", "diswoot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EX_CONFIG
    assert "Traceback" not in proc.stderr
    for name in (*REQUIRED, "WEBHOOK_PORT"):
        assert name in proc.stderr
    assert "has a secret space" not in proc.stderr + proc.stdout


def test_overlong_presence_text_exits_78_naming_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **VALID,
           "PRESENCE_ONLINE_TEXT": "x" * 129}
    proc = subprocess.run(
        [sys.executable, "-m", "diswoot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EX_CONFIG
    assert "PRESENCE_ONLINE_TEXT" in proc.stderr and "128" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_presence_limit_keeps_presence_from_raising() -> None:
    longest = "\U0001d11e" * PRESENCE_TEXT_MAX  # 4 UTF-8 bytes each: the worst case
    cfg = load_config({**VALID, "PRESENCE_OFFLINE_TEXT": f"  {longest}\t "}, dotenv=None)
    assert Presence(status="idle", text=cfg.presence_offline_text).text == longest


TEXT_LIMITS = [
    ("PRESENCE_ONLINE_TEXT", 128),
    ("PRESENCE_OFFLINE_TEXT", 128),
    ("BRAND_NAME", 40),
    ("BRAND_FOOTER_TEXT", 2048),
    ("RESOLVED_MESSAGE", 4096),
    ("REOPENED_MESSAGE", 4096),
    ("GREETING_MESSAGE", 4096),
    ("CSAT_QUESTION", 4096),
    ("SNOOZED_MESSAGE", 4096),
    ("PENDING_MESSAGE", 4096),
    ("OUTSIDE_HOURS_FALLBACK_MESSAGE", 4096),
    ("CSAT_BUTTON_LABEL", 80),
    ("CSAT_COMMENT_PLACEHOLDER", 100),
]


@pytest.mark.parametrize(("name", "limit"), TEXT_LIMITS)
def test_texts_are_limited_to_what_discord_accepts(name: str, limit: int) -> None:
    at_limit = "é" * limit
    cfg = load_config({**VALID, name: f"  {at_limit}  "}, dotenv=None)  # trimmed, as Discord
    assert getattr(cfg, name.lower()).strip() == at_limit
    with pytest.raises(ConfigError) as info:
        load_config({**VALID, name: at_limit + "x"}, dotenv=None)
    assert info.value.problems == [info.value.problems[0]]
    assert info.value.problems[0].startswith(f"{name} is invalid")
    assert f"at most {limit} characters" in info.value.problems[0]


NUMBER_LIMITS = [
    ("PRESENCE_POLL_INTERVAL_MS", ["100", "86400000"], ["99", "86400001", "1.5"]),
    ("REOPEN_WINDOW_HOURS", ["0", "0.5", "8760"], ["-1", "8761", "nan", "inf", "1h"]),
    ("BACKFILL_HOURS", ["0", "1", "720"], ["-1", "721"]),
    ("RECONCILE_INTERVAL_SECONDS", ["0", "1", "86400"], ["-1", "86401"]),
    ("DISCORD_CLIENT_ID", ["1", "18446744073709551615"], ["0", "18446744073709551616", "x1"]),
    ("WEBHOOK_PORT", ["0", "65535"], ["-1", "65536"]),
    ("ATTACHMENT_MAX_MB", ["1", "500"], ["0", "501"]),
    ("DISCORD_UPLOAD_LIMIT_MB", ["1", "10"], ["0", "11"]),
    ("COLOR_INFO", ["000000", "#FFFFFF"], ["1000000", "#FFF", "0xFFFFFF"]),
]


@pytest.mark.parametrize(("name", "good", "bad"), NUMBER_LIMITS)
def test_numbers_have_bounds(name: str, good: list[str], bad: list[str]) -> None:
    for raw in good:
        load_config({**VALID, name: raw}, dotenv=None)
    for raw in bad:
        with pytest.raises(ConfigError) as info:
            load_config({**VALID, name: raw}, dotenv=None)
        assert [p.split(" ", 1)[0] for p in info.value.problems] == [name], raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("✅", "✅"),
        ("👍🏽", "👍🏽"),  # skin tone
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # ZWJ sequence
        ("❤️", "❤️"),  # VS16
        ("🇫🇷", "🇫🇷"),  # flag
        ("1️⃣", "1️⃣"),  # keycap
        ("‼", "‼"),
        ("<:party:112233445566778899>", "party:112233445566778899"),
        ("<a:dance:112233445566778899>", "dance:112233445566778899"),
        ("party_2:112233445566778899", "party_2:112233445566778899"),
        ("", ""),  # blank disables the reaction
    ],
)
def test_confirm_emoji_accepts_what_the_reaction_route_takes(raw: str, expected: str) -> None:
    assert load_config({**VALID, "CONFIRM_EMOJI": raw}, dotenv=None).confirm_emoji == expected


@pytest.mark.parametrize(
    "raw", [":white_check_mark:", "yes", "✅✅", "✅ ok", "# tick", "1", "<:x:123>", "👍🏽🏽"]
)
def test_confirm_emoji_refuses_what_discord_would_not_find(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**VALID, "CONFIRM_EMOJI": raw}, dotenv=None)
    assert info.value.problems[0].startswith("CONFIRM_EMOJI is invalid")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("BRAND_ICON_URL", "ftp://example.com/logo.png"),
        ("BRAND_ICON_URL", "https://example.com/my logo.png"),
        ("BRAND_ICON_URL", "https://example.com/" + "x" * 2048),
        ("BRAND_ICON_URL", "logo.png"),
        ("CHATWOOT_BASE_URL", "https://"),
        ("WEBHOOK_PATH_TOKEN", "abc/def"),
        ("WEBHOOK_PATH_TOKEN", "abc#def"),
        ("CHATWOOT_API_TOKEN", "two words"),
        ("SINGLTY_API_KEY", "two words"),
    ],
)
def test_urls_and_tokens_are_checked(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**VALID, name: raw}, dotenv=None)
    assert [p.split(" ", 1)[0] for p in info.value.problems] == [name]


def test_the_harness_environment_is_a_valid_configuration() -> None:
    """Daemon subprocesses in the tests get their settings through config_environment()."""
    cfg = test_config(webhook_secret="s", chatwoot_media_hosts=("files.example.com",))
    assert load_config(config_environment(cfg), dotenv=None) == cfg


@pytest.mark.parametrize(
    ("raw", "accepts"),
    [("true", True), ("allow", True), ("ALLOW", True), ("false", False), ("deny", False)],
)
def test_outside_hours_behavior_takes_the_originals_words_too(raw: str, accepts: bool) -> None:
    """The original's README says "allow" and "deny" for true and false."""
    cfg = load_config({**VALID, "OUTSIDE_HOURS_BEHAVIOR": raw}, dotenv=None)
    assert cfg.outside_hours_behavior is accepts


def test_blank_resolved_and_reopened_messages_are_kept_blank() -> None:
    """As in the original, a blank text turns that notice off (not back to the default)."""
    cfg = load_config({**VALID, "RESOLVED_MESSAGE": "", "REOPENED_MESSAGE": " "}, dotenv=None)
    assert (cfg.resolved_message.strip(), cfg.reopened_message.strip()) == ("", "")
    assert load_config(VALID, dotenv=None).reopened_message == (
        "Your support ticket has been reopened."
    )
