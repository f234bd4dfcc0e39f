"""``diswoot check``: validate the configuration and probe everything with the real credentials.

Prints one line per check (``ok`` / ``warn`` / ``FAIL``) and, for each problem, what to do about
it.  Exit status 0 only when nothing failed (warnings are allowed).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import trio

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.chatwoot.hours import WorkingHours
from diswoot.config import Config
from diswoot.rest.client import DiscordRest
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable

PRIVILEGED_NOTE = "no privileged intent is needed: DMs to the bot carry their content"


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


async def run_checks(cfg: Config, http: httpx.AsyncClient) -> Report:
    report = Report()
    report.ok("configuration is valid")
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
    hours = WorkingHours.from_inbox(inbox.raw)
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


def _check_webhook_settings(cfg: Config, report: Report) -> None:
    if cfg.webhook_secret:
        report.ok("webhooks must carry a valid X-Chatwoot-Signature (WEBHOOK_SECRET set)")
    elif cfg.webhook_path_token:
        report.ok("webhooks are accepted at POST /webhook/<WEBHOOK_PATH_TOKEN>")
    else:
        report.warn("POST /webhook accepts unauthenticated requests",
                    "set WEBHOOK_SECRET to the webhook's secret (Chatwoot 4.12+) or "
                    "WEBHOOK_PATH_TOKEN to a long random string")
    if cfg.discord_public_key:
        report.ok("Discord HTTP interactions enabled at POST /interactions")


async def _main(cfg: Config, out: TextIO) -> int:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
        report = await run_checks(cfg, http)
    report.render(out)
    return 1 if report.failed else 0


def check_cli(cfg: Config, out: TextIO = sys.stdout) -> int:
    return trio.run(_main, cfg, out)
