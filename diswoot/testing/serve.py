"""``python -m diswoot.testing.serve``: fake Discord and Chatwoot as a standalone process.

For tests that run the daemon somewhere else (a systemd unit in a container, a shell)::

    python -m diswoot.testing.serve [--webhook-url URL] [--bad-token]

Both fakes listen on free ports of 127.0.0.1.  Once they do, one JSON line on stdout gives the
environment variables that point a daemon at them (``DISCORD_TOKEN``, ``DISCORD_API_BASE_URL``,
``CHATWOOT_BASE_URL``, ...); then it serves until SIGTERM or SIGINT and exits 0.
``--bad-token`` makes both Discord's REST API (401) and its gateway (close 4004) reject the
printed token, as for a revoked bot token.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence

import trio

from diswoot.testing.fake_chatwoot import FakeChatwoot
from diswoot.testing.fake_discord import FakeDiscord

DAEMON_TOKEN = "diswoot-fake-bot-token"  # noqa: S105 - a fake credential
REJECTING_TOKEN = "a-different-bot-token"  # noqa: S105 - a fake credential
WEBHOOK_SECRET = "diswoot-fake-webhook-secret"  # noqa: S105 - a fake credential


def daemon_environment(discord: FakeDiscord, chatwoot: FakeChatwoot) -> dict[str, str]:
    """The variables that point a daemon at the running fakes."""
    return {
        "DISCORD_TOKEN": DAEMON_TOKEN,
        "DISCORD_CLIENT_ID": discord.application_id,
        "DISCORD_API_BASE_URL": discord.api_base_url,
        "CHATWOOT_BASE_URL": chatwoot.base_url,
        "CHATWOOT_ACCOUNT_ID": str(chatwoot.account_id),
        "CHATWOOT_INBOX_ID": str(chatwoot.inbox_id),
        "CHATWOOT_API_TOKEN": chatwoot.api_token,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


async def serve(webhook_urls: Sequence[str], *, bad_token: bool) -> None:
    """Run both fakes until SIGTERM/SIGINT, after printing the daemon's environment."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            discord = FakeDiscord(token=REJECTING_TOKEN if bad_token else DAEMON_TOKEN)
            chatwoot = FakeChatwoot(webhook_urls=webhook_urls, webhook_secret=WEBHOOK_SECRET)
            await discord.serve(nursery)
            await chatwoot.serve(nursery)
            print(json.dumps(daemon_environment(discord, chatwoot)), flush=True)
            async for _ in signals:
                break
            discord.close()
            chatwoot.stop()
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diswoot.testing.serve",
        description="Serve fake Discord and Chatwoot on 127.0.0.1 until SIGTERM.",
    )
    parser.add_argument(
        "--webhook-url",
        action="append",
        default=[],
        help="where the fake Chatwoot delivers its webhooks (the daemon's /webhook); repeatable",
    )
    parser.add_argument(
        "--bad-token",
        action="store_true",
        help="reject the printed DISCORD_TOKEN (REST 401, gateway close 4004)",
    )
    args = parser.parse_args(argv)
    trio.run(lambda: serve(args.webhook_url, bad_token=args.bad_token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
