"""``diswoot check``: validate the configuration and probe everything with the real credentials.

Prints one line per check (``ok`` / ``warn`` / ``FAIL``) and, for each problem, what to do about
it; warnings also cover how the configuration is written (ignored lines of the env file, values
that look like a pasted comment). Exit status 0 only when nothing failed (warnings are allowed).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.config import Config, comment_like_variables, webhook_auth_problem
from diswoot.config_values import (
    CHATWOOT_DEFAULT_UPLOAD_MB,
    COMMENT_FIX,
    MODAL_LABEL_MAX,
)
from diswoot.envfile import EnvFileError, lint_env_file
from diswoot.rest.client import DiscordRest
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.tls import client_context

PRIVILEGED_NOTE = "no privileged intent is needed: DMs to the bot carry their content"
Note = tuple[str, str]  # (what, fix): a warning about the configuration's text


@dataclass
class Report:
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (level, what, fix)

    def ok(self, what: str) -> None:
        self.lines.append(("ok", what, ""))

    def warn(self, what: str, fix: str = "") -> None:
        self.lines.append(("warn", what, fix))

    def fail(self, what: str, fix: str) -> None:
        self.lines.append(("FAIL", what, fix))

    @property
    def failed(self) -> bool:
        return any(level == "FAIL" for level, _, _ in self.lines)

    def render(self, out: TextIO) -> None:
        for level, what, fix in self.lines:
            print(f"[{level:>4}] {what}", file=out)
            if fix:
                print(f"       -> {fix}", file=out)
        verdict = "problems found" if self.failed else "all good"
        failed = sum(1 for level, _, _ in self.lines if level == "FAIL")
        warned = sum(1 for level, _, _ in self.lines if level == "warn")
        print(f"\n{verdict}: {failed} failed, {warned} warning(s)", file=out)


async def run_checks(
    cfg: Config, http: httpx.AsyncClient, notes: Sequence[Note] = ()
) -> Report:
    report = Report()
    report.ok("configuration is valid")
    for what, fix in [*notes, *config_advisories(cfg)]:
        report.warn(what, fix)
    await _check_discord(cfg, http, report)
    await _check_chatwoot(cfg, http, report)
    _check_webhook_settings(cfg, report)
    return report


async def _guard(
    report: Report, what: str, fix: str, call: Callable[[], Awaitable[Any]]
) -> Any:
    """Run one probe; turn network/HTTP errors into a FAIL line with ``fix``."""
    try:
        return await call()
    except (DiscordUnavailable, ChatwootUnavailable, httpx.HTTPError) as exc:
        report.fail(f"{what}: unreachable ({exc})", fix)
    except (DiscordHTTPError, ChatwootError) as exc:
        report.fail(f"{what}: {exc}", fix)
    return None


async def _check_discord(cfg: Config, http: httpx.AsyncClient, report: Report) -> None:
    rest = DiscordRest(http, base_url=cfg.discord_api_base_url, token=cfg.discord_token,
                       max_retries=1)
    me = await _guard(
        report, "Discord token", "reset the token in the Developer Portal (Bot > Reset Token) "
        "and update DISCORD_TOKEN; check DISCORD_API_BASE_URL", rest.get_current_user,
    )
    if me is None:
        return
    tag = me.get("username", "?")
    if me.get("discriminator") not in (None, "0"):
        tag += f"#{me['discriminator']}"
    report.ok(f"Discord token belongs to bot {tag} ({me.get('id')})")
    app = await _guard(report, "Discord application", "check DISCORD_CLIENT_ID",
                       rest.get_current_application)
    if app is not None:
        if str(app.get("id")) != cfg.discord_client_id:
            report.fail(
                f"DISCORD_CLIENT_ID is {cfg.discord_client_id} but the token belongs to "
                f"application {app.get('id')}",
                f"set DISCORD_CLIENT_ID={app.get('id')}",
            )
        else:
            report.ok(f"application {app.get('name', '?')} matches DISCORD_CLIENT_ID")
    gateway = await _guard(report, "Discord gateway", "check network access to Discord",
                           rest.get_gateway_bot)
    if gateway is not None:
        limit = gateway.get("session_start_limit", {})
        remaining, total = limit.get("remaining"), limit.get("total")
        line = f"gateway {gateway.get('url')} ({remaining}/{total} identifies left today)"
        if isinstance(remaining, int) and remaining < 10:
            report.fail(line, "wait for the daily identify budget to reset before restarting; "
                        "running out resets the token")
        else:
            report.ok(line + "; " + PRIVILEGED_NOTE)


async def _check_chatwoot(cfg: Config, http: httpx.AsyncClient, report: Report) -> None:
    base = cfg.chatwoot_base_url
    fix = "check CHATWOOT_BASE_URL and that this host can reach it"
    try:
        response = await http.get(f"{base}/api", timeout=10)
    except httpx.HTTPError as exc:
        report.fail(f"Chatwoot at {base} is unreachable ({exc})", fix)
        return
    if response.status_code != 200:
        report.fail(f"Chatwoot at {base} answered GET /api with {response.status_code}", fix)
        return
    try:
        info = response.json()
    except ValueError:
        info = None
    version = info.get("version") if isinstance(info, dict) else None
    report.ok(f"Chatwoot reachable at {base}" + (f" (version {version})" if version else ""))
    chatwoot = ChatwootClient(http, base_url=base, account_id=cfg.chatwoot_account_id,
                              inbox_id=cfg.chatwoot_inbox_id, api_token=cfg.chatwoot_api_token)
    profile = await _guard(report, "Chatwoot token",
                           "create a user access token (Profile > Access Token); agent-bot "
                           "tokens cannot list or update messages", chatwoot.get_profile)
    if profile is None:
        return
    accounts = [a.get("id") for a in profile.get("accounts", []) if isinstance(a, dict)]
    report.ok(f"Chatwoot token belongs to {profile.get('name', '?')} ({profile.get('email', '')})")
    if accounts and cfg.chatwoot_account_id not in accounts:
        report.fail(f"the token's user is not a member of account {cfg.chatwoot_account_id}",
                    f"use one of the accounts {accounts} or a token of that account's user")
        return
    inbox = await _guard(report, f"Chatwoot inbox {cfg.chatwoot_inbox_id}",
                         "check CHATWOOT_INBOX_ID and that the token's user is a member of the "
                         "inbox (or an administrator)", chatwoot.get_inbox)
    if inbox is None:
        return
    if inbox.channel_type != "Channel::Api":
        report.fail(f"inbox {inbox.name!r} is a {inbox.channel_type} inbox",
                    "create an API inbox (Settings > Inboxes > Add Inbox > API)")
    else:
        report.ok(f"inbox {inbox.name!r} is an API inbox")
    hours = inbox.hours
    report.ok(
        "inbox settings: "
        f"CSAT {'on' if inbox.csat_survey_enabled else 'off'}, "
        f"lock to single conversation {'on' if inbox.lock_to_single_conversation else 'off'}, "
        f"working hours {'on (' + str(hours.tz) + ')' if inbox.working_hours_enabled else 'off'}, "
        f"greeting {'on' if inbox.greeting_enabled else 'off'}"
    )
    if cfg.csat_enabled and not inbox.csat_survey_enabled:
        report.warn("CSAT_ENABLED=true but the inbox has CSAT disabled: no Rate-us button",
                    "enable CSAT in the inbox settings, or set CSAT_ENABLED=false")


def environment_notes(
    env: Mapping[str, str], env_file: Path | None, *, as_systemd: bool = True
) -> list[Note]:
    """Warnings about how the configuration is written: ignored lines, pasted comments
    (``as_systemd``: the file is the unit's ``EnvironmentFile=``, else ``./.env``)."""
    notes: list[Note] = []
    if env_file is not None and env_file.is_file():
        text = env_file.read_bytes().decode("utf-8", errors="replace")
        try:
            lint = lint_env_file(text, dotenv=not as_systemd)
            notes += [(f"{env_file}: {note}", "") for note in lint]
        except EnvFileError:
            pass  # unreadable as a whole: the configuration error says why
    notes += [
        (f"{name} looks like a pasted comment (it starts with # or holds ' # ')", COMMENT_FIX)
        for name in comment_like_variables(env)
    ]
    return notes


def config_advisories(cfg: Config) -> list[Note]:
    """Valid settings that may still not do what was meant."""
    notes: list[Note] = []
    if len(cfg.csat_question.strip()) > MODAL_LABEL_MAX:
        notes.append((
            f"CSAT_QUESTION is longer than {MODAL_LABEL_MAX} characters: the rating form's label "
            "shows it shortened with …",
            "keep the question short, or accept the shortened label",
        ))
    if cfg.attachment_max_mb > CHATWOOT_DEFAULT_UPLOAD_MB:
        notes.append((
            f"ATTACHMENT_MAX_MB={cfg.attachment_max_mb} is above Chatwoot's default upload limit "
            f"({CHATWOOT_DEFAULT_UPLOAD_MB} MB)",
            "make sure Chatwoot and any proxy in front of it accept files that large",
        ))
    return notes


def _check_webhook_settings(cfg: Config, report: Report) -> None:
    problem = webhook_auth_problem(cfg)
    if problem is not None:
        report.fail("POST /webhook would accept unauthenticated requests: `diswoot run` "
                    "refuses to start", problem)
    elif cfg.webhook_secret:
        report.ok("webhooks must carry a valid X-Chatwoot-Signature (WEBHOOK_SECRET set)")
    elif cfg.webhook_path_token:
        report.ok("webhooks are accepted at POST /webhook/<WEBHOOK_PATH_TOKEN>")
    else:
        report.warn("POST /webhook accepts unauthenticated requests "
                    "(WEBHOOK_ALLOW_UNAUTHENTICATED=true)",
                    "only safe if something in front of diswoot authenticates Chatwoot")
    if cfg.discord_public_key:
        report.ok("Discord HTTP interactions enabled at POST /interactions")


async def _main(cfg: Config, out: TextIO, notes: Sequence[Note]) -> int:
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, connect=5.0), verify=client_context()
    ) as http:
        report = await run_checks(cfg, http, notes)
    report.render(out)
    return 1 if report.failed else 0


def check_cli(cfg: Config, out: TextIO = sys.stdout, notes: Sequence[Note] = ()) -> int:
    return trio.run(_main, cfg, out, notes)
