"""``diswoot deploy-commands``: bulk-overwrite the global slash commands (discord-api.md §4).

``PUT /applications/{DISCORD_CLIENT_ID}/commands`` replaces every global command of the
application with :data:`diswoot.bridge.commands.COMMAND_DEFINITIONS`, so running it twice is
harmless.  Exit status: 0 when Discord accepted the set, 78 (EX_CONFIG) when the token or the
application id is wrong, 1 for anything else (invalid body, Discord unreachable).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import httpx
import trio

from diswoot.bridge.commands import COMMAND_DEFINITIONS
from diswoot.config import EX_CONFIG, Config
from diswoot.rest.client import DiscordRest
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.tls import client_context

HTTP_TIMEOUT = 15.0
MAX_RETRIES = 2


async def deploy_commands(rest: DiscordRest, application_id: str) -> list[dict[str, Any]]:
    """Replace the application's global commands with diswoot's; returns what Discord stored."""
    return await rest.bulk_overwrite_global_commands(application_id, COMMAND_DEFINITIONS)


def deploy_commands_cli(
    cfg: Config, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run :func:`deploy_commands` with the configured credentials; print the outcome."""
    return trio.run(_deploy, cfg, out or sys.stdout, err or sys.stderr)


async def _deploy(cfg: Config, out: TextIO, err: TextIO) -> int:
    app_id = cfg.discord_client_id
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, verify=client_context()) as http:
        rest = DiscordRest(
            http,
            base_url=cfg.discord_api_base_url,
            token=cfg.discord_token,
            max_retries=MAX_RETRIES,
        )
        try:
            registered = await deploy_commands(rest, app_id)
        except DiscordHTTPError as exc:
            status, message = _explain(exc, app_id)
            print(f"diswoot: could not register the slash commands: {message}", file=err)
            return status
        except DiscordUnavailable as exc:
            print(
                f"diswoot: could not register the slash commands: Discord is unreachable or "
                f"failing at {cfg.discord_api_base_url} ({exc}); check DISCORD_API_BASE_URL "
                "and the network, then run `diswoot deploy-commands` again",
                file=err,
            )
            return 1
    print(format_registered(registered, app_id), file=out)
    return 0


def format_registered(commands: list[dict[str, Any]], application_id: str) -> str:
    """One line per command, as Discord stored it."""
    lines = [f"Registered {len(commands)} global slash commands for application {application_id}:"]
    for command in commands:
        options = "".join(
            f" [{o['name']}]" if not o.get("required") else f" <{o['name']}>"
            for o in command.get("options") or []
        )
        lines.append(
            f"  /{command['name']}{options} - {command.get('description', '')} "
            f"(id {command.get('id', '?')})"
        )
    lines.append(
        "They work in DMs with the bot for users who share a server with it; a Discord client "
        "may need a reload (Ctrl+R) to show changes."
    )
    return "\n".join(lines)


def _explain(exc: DiscordHTTPError, application_id: str) -> tuple[int, str]:
    """Exit status and an actionable sentence for a rejected request (never the token)."""
    if exc.status == 401:
        return EX_CONFIG, (
            "Discord rejected the bot token (401 Unauthorized); set DISCORD_TOKEN to the token "
            "from Developer Portal > Bot > Token"
        )
    if exc.status in (403, 404):
        return EX_CONFIG, (
            f"Discord refused access to application {application_id} (HTTP {exc.status}: "
            f"{exc.message}); DISCORD_CLIENT_ID must be the application id of the bot whose "
            "token is in DISCORD_TOKEN (Developer Portal > General Information)"
        )
    details = f"; details: {exc.errors}" if exc.errors else ""
    return 1, (
        f"Discord rejected the command list (HTTP {exc.status}"
        f"{f' code {exc.code}' if exc.code is not None else ''}: {exc.message}){details}"
    )
