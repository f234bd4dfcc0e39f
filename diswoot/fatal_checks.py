"""What ends the daemon with exit 78 beyond the variables themselves: a database path it cannot
use, Chatwoot refusing the credentials at start, Discord or Chatwoot refusing its token while
running.
A service that is merely down is never one of them: the daemon waits for it.
"""

from __future__ import annotations

import logging
import sqlite3

import trio

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.config import Config
from diswoot.context import Context
from diswoot.errors import FatalConfigurationError
from diswoot.rest.client import DiscordRest
from diswoot.store.db import connect

log = logging.getLogger("diswoot.service")  # the messages read as the service's own

_UNUSABLE_DATABASE = ("unable to open database file", "readonly database", "not a database")


async def check_database(cfg: Config) -> None:
    """A database path the daemon cannot use (no permission, not a directory, not a SQLite
    file) is a configuration error: exit 78 naming DISWOOT_DB_PATH, not a traceback."""
    try:
        db = await trio.to_thread.run_sync(connect, str(cfg.db_path))
    except (OSError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.DatabaseError) and not any(
            text in str(exc) for text in _UNUSABLE_DATABASE
        ):
            raise  # e.g. a full disk: not the configuration's fault, a restart may help
        raise FatalConfigurationError(
            f"DISWOOT_DB_PATH={cfg.db_path} cannot be used: {exc} (a writable path for the "
            "daemon's user; the systemd unit keeps it in /var/lib/diswoot)"
        ) from None
    await trio.to_thread.run_sync(db.close)


async def check_chatwoot_credentials(ctx: Context) -> None:
    """Fail fast (exit 78) on a rejected token or a wrong inbox; carry on if Chatwoot is down."""
    try:
        with trio.fail_after(15):
            await ctx.chatwoot.get_inbox()
    except trio.TooSlowError:
        log.warning("Chatwoot did not answer at start-up; DMs will be queued until it does")
    except ChatwootUnavailable as exc:
        log.warning("Chatwoot is unreachable at start-up (%s); DMs will be queued", exc)
    except ChatwootError as exc:
        if exc.status in (401, 403, 404):
            raise FatalConfigurationError(
                f"Chatwoot rejected the configuration: {exc}. Check CHATWOOT_API_TOKEN "
                "(a user access token), CHATWOOT_ACCOUNT_ID and CHATWOOT_INBOX_ID (an API inbox "
                "the token's user can access); `diswoot check` explains more"
            ) from None
        raise


async def refuse_rejected_tokens(
    discord: DiscordRest,
    chatwoot: ChatwootClient,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Discord or Chatwoot refused its token while running: stop with 78 (the jobs that met
    it wait in SQLite, transient, for the start with a valid token)."""
    rejected: list[str] = []
    async with trio.open_nursery() as nursery:

        async def first(event: trio.Event, message: str) -> None:
            await event.wait()
            rejected.append(message)
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, discord.token_rejected, _DISCORD_REJECTED)
        nursery.start_soon(first, chatwoot.token_rejected, _CHATWOOT_REJECTED)
        task_status.started()
    raise FatalConfigurationError(rejected[0])


_DISCORD_REJECTED = (
    "Discord refused the bot token (HTTP 401): it was reset or revoked. Pending deliveries "
    "stay queued; set the new DISCORD_TOKEN (Developer Portal, Bot) and start diswoot again."
)
_CHATWOOT_REJECTED = (
    "Chatwoot refused CHATWOOT_API_TOKEN (HTTP 401, Invalid Access Token): it was revoked or "
    "regenerated. Pending DMs stay queued; set the user's current access token (Profile > "
    "Access Token) and start diswoot again."
)
