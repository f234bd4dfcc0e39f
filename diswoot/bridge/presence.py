"""Bot presence follows the inbox's working hours.

Online with PRESENCE_ONLINE_TEXT while the inbox is open, idle with PRESENCE_OFFLINE_TEXT while
it is closed.  Re-evaluated every PRESENCE_POLL_INTERVAL_MS, exactly at the next opening/closing
boundary, and whenever the cached inbox configuration changes.  Updates go to the gateway over
``ctx.presence_tx``; the gateway re-sends the latest one after every (re)identify.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import trio

from diswoot.chatwoot.hours import WorkingHours
from diswoot.config import Config
from diswoot.context import Context
from diswoot.gateway.events import Presence

log = logging.getLogger("diswoot.presence")

BOUNDARY_SLACK = 0.5  # seconds after a boundary, so "now" is past it when we look again


def presence_for(cfg: Config, hours: WorkingHours, now: datetime) -> Presence:
    """Online with the online text inside working hours, idle with the offline text outside."""
    if hours.is_open(now):
        return Presence(status="online", text=cfg.presence_online_text)
    return Presence(status="idle", text=cfg.presence_offline_text)


def seconds_until_recheck(cfg: Config, hours: WorkingHours, now: datetime) -> float:
    """The poll interval, or less when an opening/closing boundary comes sooner."""
    wait = cfg.presence_poll_interval_ms / 1000
    boundary = hours.next_change(now)
    if boundary is not None:
        wait = min(wait, max(0.0, (boundary - now).total_seconds()) + BOUNDARY_SLACK)
    return wait


def current_hours(ctx: Context) -> WorkingHours:
    """The cached inbox's schedule; always open until the inbox was fetched once."""
    inbox = ctx.inbox.current
    return inbox.hours if inbox is not None else WorkingHours.always_open()


async def run_presence(ctx: Context, stop: trio.Event) -> None:
    """Keep the gateway's presence in step with the working hours until ``stop``."""
    last: Presence | None = None
    while not stop.is_set():
        changed = ctx.inbox.changed  # taken first, so a change while we send is not missed
        hours = current_hours(ctx)
        now = datetime.fromtimestamp(ctx.clock(), UTC)
        presence = presence_for(ctx.cfg, hours, now)
        if presence != last:
            log.info("presence: %s (%s)", presence.status, presence.text)
            await ctx.presence_tx.send(presence)
            last = presence
        with trio.move_on_after(seconds_until_recheck(ctx.cfg, hours, now)):
            async with trio.open_nursery() as waiters:
                # whichever comes first: stop, or a new inbox configuration
                waiters.start_soon(_wait_then_cancel, stop.wait, waiters.cancel_scope)
                waiters.start_soon(_wait_then_cancel, changed.wait, waiters.cancel_scope)


async def _wait_then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()
