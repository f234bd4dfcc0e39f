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
    webhook_auth_problem,
)

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
    env = {"PATH": "/usr/bin:/bin", **VALID}
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


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    lines = [f"{k}={v}" for k, v in VALID.items()]
    lines += [
        "BRAND_NAME=From dotenv  # an inline comment",
        'GREETING_MESSAGE="Hello # not a comment"',
        "WEBHOOK_PORT=4000",
        "export LOG_LEVEL=debug",
        "# a comment line",
        "WEBHOOK_SECRET=   # blank with a comment",
    ]
    dotenv.write_text("\n".join(lines), encoding="utf-8")
    cfg = load_config({"WEBHOOK_PORT": "5000"}, dotenv=dotenv)
    assert cfg.brand_name == "From dotenv"
    assert cfg.greeting_message == "Hello # not a comment"
    assert cfg.webhook_port == 5000  # real environment wins
    assert cfg.log_level == "DEBUG"
    assert cfg.webhook_secret == ""


def test_env_example_documents_every_variable() -> None:
    documented = parse_dotenv((REPO / ".env.example").read_text(encoding="utf-8"))
    names = {f.name.upper() for f in dataclasses.fields(Config)}
    assert names == set(documented)
    assert "REOPENED_MESSAGE" in documented


def test_cli_exits_78_listing_every_bad_variable_without_secrets(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DISCORD_TOKEN": "has a secret space", "WEBHOOK_PORT": "x"}
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
