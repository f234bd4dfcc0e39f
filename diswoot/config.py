"""Typed configuration from the environment (and an optional ``.env`` file).

Every variable maps to a :class:`Config` attribute with the same name in lower case
(``DISCORD_TOKEN`` -> ``cfg.discord_token``).  :func:`load_config` validates all of them at
once and raises :class:`ConfigError` naming *every* bad variable; secrets never appear in its
message.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EX_CONFIG = 78

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
    diswoot_db_path: str = "data/diswoot.db"
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
    reopened_message: str = (
        "Your support ticket has been reopened. An agent will be with you shortly."
    )
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
    reopen_window_hours: int = 0
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

_HEX = re.compile(r"#?([0-9a-fA-F]{6})")
_SNOWFLAKE = re.compile(r"[0-9]{15,21}")
_HOST = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int_parser(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"expected a whole number of at least {minimum}{upper}")
        return value

    return parse


def _parse_colour(raw: str) -> int:
    m = _HEX.fullmatch(raw.strip())
    if not m:
        raise ValueError("expected a hex colour like 7BB8F5 or #7BB8F5")
    return int(m.group(1), 16)


def _url_parser(required: bool) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().rstrip("/")
        if not value and not required:
            return ""
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    return parse


def _parse_snowflake(raw: str) -> str:
    value = raw.strip()
    if not _SNOWFLAKE.fullmatch(value):
        raise ValueError("expected a Discord application id (a 15-21 digit number)")
    return value


def _parse_public_key(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError("expected the application's 64-character hex public key")
    return value.lower()


def _parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in _LOG_LEVELS:
        raise ValueError("expected one of " + ", ".join(_LOG_LEVELS))
    return value


def _parse_token(raw: str) -> str:
    value = raw.strip()
    if value.lower().startswith("bot "):
        value = value[4:].strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("expected the bot token (without spaces)")
    return value


def _parse_hosts(raw: str) -> tuple[str, ...]:
    """``files.example.com, cdn.example.com:8443`` -> lower-case ``host[:port]`` entries.

    An entry may also be written as an origin (``https://files.example.com``).
    """
    hosts: list[str] = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        netloc = urlsplit(entry).netloc if "://" in entry else entry
        if not _HOST.fullmatch(netloc):
            raise ValueError(f"expected comma-separated host names (got {entry[:60]!r})")
        hosts.append(netloc.lower())
    return tuple(hosts)


def _parse_text(raw: str) -> str:
    return raw


def _parse_port(raw: str) -> int:
    return _int_parser(0, 65535)(raw)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "DISCORD_TOKEN": _parse_token,
    "DISCORD_CLIENT_ID": _parse_snowflake,
    "CHATWOOT_BASE_URL": _url_parser(required=True),
    "CHATWOOT_ACCOUNT_ID": _int_parser(1),
    "CHATWOOT_INBOX_ID": _int_parser(1),
    "DISCORD_API_BASE_URL": _url_parser(required=True),
    "DISCORD_PUBLIC_KEY": _parse_public_key,
    "DISCORD_GATEWAY_COMPRESS": _parse_bool,
    "WEBHOOK_ALLOW_UNAUTHENTICATED": _parse_bool,
    "CHATWOOT_MEDIA_HOSTS": _parse_hosts,
    "WEBHOOK_PORT": _parse_port,
    "LOG_LEVEL": _parse_log_level,
    "BRAND_ICON_URL": _url_parser(required=False),
    "SINGLTY_API_URL": _url_parser(required=False),
    "COLOR_PRIMARY": _parse_colour,
    "COLOR_SUCCESS": _parse_colour,
    "COLOR_DANGER": _parse_colour,
    "COLOR_WARNING": _parse_colour,
    "COLOR_INFO": _parse_colour,
    "PRESENCE_POLL_INTERVAL_MS": _int_parser(1000),
    "GREETING_ENABLED": _parse_bool,
    "CSAT_ENABLED": _parse_bool,
    "CSAT_COMMENT_ENABLED": _parse_bool,
    "OUTSIDE_HOURS_BEHAVIOR": _parse_bool,
    "REOPEN_WINDOW_HOURS": _int_parser(0),
    "BACKFILL_HOURS": _int_parser(0),
    "RECONCILE_INTERVAL_SECONDS": _int_parser(0),
    "ATTACHMENT_MAX_MB": _int_parser(1),
    "DISCORD_UPLOAD_LIMIT_MB": _int_parser(1),
}

# Texts where a blank value is meaningful ("leave blank to disable") and must be kept.
_BLANK_DISABLES = frozenset({"SNOOZED_MESSAGE", "PENDING_MESSAGE", "CONFIRM_EMOJI"})


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``.env`` text: ``KEY=value`` lines, optional quotes, ``#`` comments."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        rest = rest.strip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            end = rest.find(quote, 1)
            value = rest[1:end] if end != -1 else rest[1:]
            if quote == '"':
                value = value.replace("\\n", "\n")
        elif rest.startswith("#"):
            value = ""  # "KEY=   # comment"
        else:
            # an unquoted value ends at " #" (inline comment)
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        values[key] = value
    return values


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> dict[str, str]:
    """The effective variables: ``.env`` (if present) overlaid by the real environment."""
    merged: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        merged.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
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
        parser = _PARSERS.get(name, _parse_text)
        try:
            values[f.name] = parser(raw)
        except ValueError as exc:
            shown = "" if name in SECRET_VARIABLES else f" (got {raw.strip()[:60]!r})"
            problems.append(f"{name} is invalid: {exc}{shown}")
    if problems:
        raise ConfigError(problems)
    return Config(**values)


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
    "load_config",
    "parse_dotenv",
    "read_environment",
    "test_config",
    "webhook_auth_problem",
]
