"""Typed configuration from the environment (and an optional ``.env`` file).

Every variable maps to a :class:`Config` attribute with the same name in lower case
(``DISCORD_TOKEN`` -> ``cfg.discord_token``).  :func:`load_config` validates all of them at
once and raises :class:`ConfigError` naming *every* bad variable; secrets never appear in its
message.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diswoot import config_values as v
from diswoot.envfile import EnvFileError, parse_dotenv, read_env_file

EX_CONFIG = 78
DEFAULT_DB_PATH = "data/diswoot.db"

SECRET_VARIABLES = frozenset(
    {
        "DISCORD_TOKEN",
        "CHATWOOT_API_TOKEN",
        "WEBHOOK_SECRET",
        "WEBHOOK_PATH_TOKEN",
        "SINGLTY_API_KEY",
    }
)


class ConfigError(Exception):
    """One or more variables are missing or invalid; ``problems`` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class Config:
    """The daemon's settings; attribute = environment variable name in lower case."""

    # Required credentials and connections
    discord_token: str
    discord_client_id: str
    chatwoot_base_url: str
    chatwoot_account_id: int
    chatwoot_api_token: str
    chatwoot_inbox_id: int

    # Endpoints and local state (added by Diswoot)
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_public_key: str = ""
    discord_gateway_compress: bool = True
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 3000
    webhook_secret: str = ""
    webhook_path_token: str = ""
    webhook_allow_unauthenticated: bool = False
    chatwoot_media_hosts: tuple[str, ...] = ()
    diswoot_db_path: str = DEFAULT_DB_PATH
    log_level: str = "INFO"

    # Branding
    brand_name: str = "Support"
    brand_icon_url: str = ""
    brand_footer_text: str = ""

    # Embed colours (24-bit ints)
    color_primary: int = 0x7BB8F5
    color_success: int = 0x6FD8A0
    color_danger: int = 0xF28B87
    color_warning: int = 0xF5CF7B
    color_info: int = 0xA89EF5

    # Presence
    presence_poll_interval_ms: int = 300000
    presence_online_text: str = "DM to open a support ticket"
    presence_offline_text: str = "Support is currently offline"

    # UX texts
    confirm_emoji: str = "✅"
    resolved_message: str = (
        "Your support ticket has been resolved. DM us again to reopen it."
    )
    reopened_message: str = "Your support ticket has been reopened."  # the original's
    greeting_enabled: bool = True
    greeting_message: str = (
        "Thanks for reaching out! A support agent will get back to you as soon as possible."
    )
    csat_enabled: bool = True
    csat_question: str = "How would you rate your support experience?"
    csat_button_label: str = "⭐ Rate us"
    csat_comment_enabled: bool = True
    csat_comment_placeholder: str = "Any additional feedback? (optional)"
    snoozed_message: str = "Your ticket has been snoozed. We'll follow up with you soon."
    pending_message: str = "Your ticket is queued and will be assigned to an agent shortly."

    # Ticket lifecycle and working hours
    reopen_window_hours: float = 0
    outside_hours_behavior: bool = True
    outside_hours_fallback_message: str = "Our support team is currently offline."

    # Plugins
    singlty_api_url: str = ""
    singlty_api_key: str = ""

    # No-loss features
    backfill_hours: int = 72
    reconcile_interval_seconds: int = 120
    attachment_max_mb: int = 40
    discord_upload_limit_mb: int = 10

    # ------------------------------------------------------------------ derived helpers
    @property
    def footer_text(self) -> str:
        """Text of every embed footer: BRAND_FOOTER_TEXT, else BRAND_NAME."""
        return self.brand_footer_text or self.brand_name

    @property
    def db_path(self) -> Path:
        return Path(self.diswoot_db_path)

    @property
    def chatwoot_account_url(self) -> str:
        return f"{self.chatwoot_base_url}/api/v1/accounts/{self.chatwoot_account_id}"

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (handy in tests)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:  # never print secrets
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.upper() in SECRET_VARIABLES and value:
                value = "***"
            parts.append(f"{f.name}={value!r}")
        return f"Config({', '.join(parts)})"


REQUIRED = (
    "DISCORD_TOKEN",
    "DISCORD_CLIENT_ID",
    "CHATWOOT_BASE_URL",
    "CHATWOOT_ACCOUNT_ID",
    "CHATWOOT_API_TOKEN",
    "CHATWOOT_INBOX_ID",
)

# Variable -> parser; the rest are free texts without a limit (paths, names, the bind host).
# Durations have sane bounds: below them a value is a typo (or hammers an API), above them it
# could not be meant.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "DISCORD_TOKEN": v.parse_token,
    "DISCORD_CLIENT_ID": v.parse_application_id,
    "CHATWOOT_BASE_URL": v.url_parser(required=True),
    "CHATWOOT_ACCOUNT_ID": v.int_parser(1),
    "CHATWOOT_API_TOKEN": v.parse_secret,
    "CHATWOOT_INBOX_ID": v.int_parser(1),
    "DISCORD_API_BASE_URL": v.url_parser(required=True),
    "DISCORD_PUBLIC_KEY": v.parse_public_key,
    "DISCORD_GATEWAY_COMPRESS": v.parse_bool,
    "WEBHOOK_SECRET": v.parse_secret,
    "WEBHOOK_PATH_TOKEN": v.parse_path_token,
    "WEBHOOK_ALLOW_UNAUTHENTICATED": v.parse_bool,
    "CHATWOOT_MEDIA_HOSTS": v.parse_hosts,
    "WEBHOOK_PORT": v.int_parser(0, 65535),  # 0: any free port (tests)
    "LOG_LEVEL": v.parse_log_level,
    "BRAND_NAME": v.text_parser(v.BRAND_NAME_MAX, "BRAND_NAME (also the rating form's title)"),
    "BRAND_ICON_URL": v.url_parser(required=False),
    "BRAND_FOOTER_TEXT": v.text_parser(v.EMBED_FOOTER_MAX, "an embed footer"),
    "COLOR_PRIMARY": v.parse_colour,
    "COLOR_SUCCESS": v.parse_colour,
    "COLOR_DANGER": v.parse_colour,
    "COLOR_WARNING": v.parse_colour,
    "COLOR_INFO": v.parse_colour,
    # the presence is recomputed locally (and on every inbox change): 0.1 s .. 1 day
    "PRESENCE_POLL_INTERVAL_MS": v.int_parser(100, 86_400_000),
    # trimmed: gateway.events.Presence counts the bytes of exactly what is sent
    "PRESENCE_ONLINE_TEXT": v.text_parser(
        v.PRESENCE_TEXT_MAX, "Discord's custom status", strip=True
    ),
    "PRESENCE_OFFLINE_TEXT": v.text_parser(
        v.PRESENCE_TEXT_MAX, "Discord's custom status", strip=True
    ),
    "CONFIRM_EMOJI": v.parse_emoji,
    "RESOLVED_MESSAGE": v.text_parser(v.EMBED_DESCRIPTION_MAX, "an embed description"),
    "REOPENED_MESSAGE": v.text_parser(v.EMBED_DESCRIPTION_MAX, "an embed description"),
    "GREETING_ENABLED": v.parse_bool,
    "GREETING_MESSAGE": v.text_parser(v.EMBED_DESCRIPTION_MAX, "an embed description"),
    "CSAT_ENABLED": v.parse_bool,
    "CSAT_QUESTION": v.text_parser(v.EMBED_DESCRIPTION_MAX, "an embed description"),
    "CSAT_BUTTON_LABEL": v.text_parser(v.BUTTON_LABEL_MAX, "a button label"),
    "CSAT_COMMENT_ENABLED": v.parse_bool,
    "CSAT_COMMENT_PLACEHOLDER": v.text_parser(v.PLACEHOLDER_MAX, "a text input's placeholder"),
    "SNOOZED_MESSAGE": v.text_parser(v.EMBED_DESCRIPTION_MAX, "an embed description"),
    "PENDING_MESSAGE": v.text_parser(v.EMBED_DESCRIPTION_MAX, "an embed description"),
    # hours, fractions too (as the original's Number()); more than a year would mean "always
    # reopen", which 0 already says
    "REOPEN_WINDOW_HOURS": v.hours_parser(8760),
    "OUTSIDE_HOURS_BEHAVIOR": v.parse_outside_hours,
    "OUTSIDE_HOURS_FALLBACK_MESSAGE": v.text_parser(
        v.EMBED_DESCRIPTION_MAX, "an embed description"
    ),
    "SINGLTY_API_URL": v.url_parser(required=False),
    "SINGLTY_API_KEY": v.parse_secret,
    # a backfill replays every DM of the look-back as new messages: at most 30 days
    "BACKFILL_HOURS": v.int_parser(1, 720, zero_disables=True),
    # each sweep lists recently updated conversations from Chatwoot (one request, more only
    # for conversations with undelivered replies)
    "RECONCILE_INTERVAL_SECONDS": v.int_parser(1, 86_400, zero_disables=True),
    # a sanity bound: Discord's largest upload tier (Nitro) is 500 MB, so a larger cap is a typo
    "ATTACHMENT_MAX_MB": v.int_parser(1, 500),
    "DISCORD_UPLOAD_LIMIT_MB": v.int_parser(1, v.DISCORD_UPLOAD_MAX_MB),
}

# Texts where a blank value is meaningful ("leave blank to disable") and must be kept.
_BLANK_DISABLES = frozenset(
    {"RESOLVED_MESSAGE", "REOPENED_MESSAGE", "SNOOZED_MESSAGE", "PENDING_MESSAGE", "CONFIRM_EMOJI"}
)


def read_environment(
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
    *,
    as_systemd: bool = False,
) -> dict[str, str]:
    """The effective variables: ``.env`` (if present) overlaid by the real environment.

    The file is read with systemd's ``EnvironmentFile=`` rules (:mod:`diswoot.envfile`), plus
    the original project's `` # comments`` after values and ``export`` unless ``as_systemd``
    (``--env-file``: the file the systemd unit reads).
    """
    merged: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        try:
            merged.update(read_env_file(dotenv, dotenv=not as_systemd))
        except EnvFileError as exc:
            raise ConfigError([str(exc)]) from None
    merged.update(os.environ if environ is None else environ)
    return merged


def load_config(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Config:
    """Build a :class:`Config`; raise :class:`ConfigError` listing every problem."""
    env = read_environment(environ, dotenv)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        name = f.name.upper()
        raw = env.get(name)
        if raw is None or (raw.strip() == "" and name not in _BLANK_DISABLES):
            if name in REQUIRED:
                problems.append(f"{name} is required but not set ({_expectation(name)})")
            continue
        parser = _PARSERS.get(name)
        try:
            values[f.name] = raw if parser is None else parser(raw)
        except ValueError as exc:
            shown = "" if name in SECRET_VARIABLES else f" (got {raw.strip()[:60]!r})"
            hint = ""
            if v.looks_like_comment(name, raw):
                hint = f"; the value looks like a pasted comment: {v.COMMENT_FIX}"
            problems.append(f"{name} is invalid: {exc}{shown}{hint}")
    if problems:
        raise ConfigError(problems)
    return Config(**values)


def comment_like_variables(env: Mapping[str, str]) -> list[str]:
    """The variables whose values look like a comment pasted after ``KEY=`` (see check)."""
    names = (f.name.upper() for f in dataclasses.fields(Config))
    return [n for n in names if n in env and v.looks_like_comment(n, env[n])]


def webhook_auth_problem(cfg: Config) -> str | None:
    """Why the daemon must not serve webhooks with ``cfg`` (None when it may).

    Without WEBHOOK_SECRET or WEBHOOK_PATH_TOKEN anyone who can reach the port could post
    webhooks; only an explicit WEBHOOK_ALLOW_UNAUTHENTICATED=true accepts that.
    """
    if cfg.webhook_secret or cfg.webhook_path_token or cfg.webhook_allow_unauthenticated:
        return None
    return (
        "WEBHOOK_SECRET or WEBHOOK_PATH_TOKEN must be set: without either, anyone who can reach "
        "the port could post webhooks (set WEBHOOK_ALLOW_UNAUTHENTICATED=true only if something "
        "in front of diswoot authenticates Chatwoot)"
    )


def _expectation(name: str) -> str:
    return {
        "DISCORD_TOKEN": "the bot token from Developer Portal > Bot > Token",
        "DISCORD_CLIENT_ID": "the application id from Developer Portal > General Information",
        "CHATWOOT_BASE_URL": "e.g. https://app.chatwoot.com",
        "CHATWOOT_ACCOUNT_ID": "the numeric account id",
        "CHATWOOT_API_TOKEN": "a user access token from Profile > Access Token",
        "CHATWOOT_INBOX_ID": "the numeric id of the API inbox",
    }[name]


def test_config(**overrides: Any) -> Config:
    """A valid configuration for tests and the sandbox (fake credentials)."""
    base: dict[str, Any] = {
        "discord_token": "test-token",
        "discord_client_id": "1200000000000000000",
        "chatwoot_base_url": "http://127.0.0.1:1",
        "chatwoot_account_id": 1,
        "chatwoot_api_token": "test-chatwoot-token",
        "chatwoot_inbox_id": 7,
        "discord_api_base_url": "http://127.0.0.1:1/api/v10",
        "webhook_host": "127.0.0.1",
        "webhook_port": 0,
    }
    base.update(overrides)
    return Config(**base)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

__all__ = [
    "EX_CONFIG",
    "REQUIRED",
    "SECRET_VARIABLES",
    "Config",
    "ConfigError",
    "comment_like_variables",
    "load_config",
    "parse_dotenv",
    "read_environment",
    "test_config",
    "webhook_auth_problem",
]
