"""Periodic Chatwoot reachability check with graceful degradation.

While Chatwoot is unreachable, inbound work stays queued (stored, retried with backoff); the
moment a probe succeeds again every waiting queue is woken so delivery resumes at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from diswoot.bridge.jobs import JobQueue
from diswoot.context import Context

log = logging.getLogger("diswoot.health")

UP_INTERVAL = 30.0
DOWN_INTERVAL = 5.0


async def probe_once(ctx: Context, queues: Sequence[JobQueue]) -> bool:
    """Probe now, record the result, wake the queues when Chatwoot came back."""
    ok = await ctx.chatwoot.probe()
    health = ctx.health
    was = health.chatwoot_reachable
    health.chatwoot_reachable = ok
    health.chatwoot_checked_at = ctx.clock()
    health.chatwoot_error = None if ok else "probe failed"
    ctx.metrics.chatwoot_up.set(1 if ok else 0)
    if ok and was is False:
        log.info("Chatwoot is reachable again; resuming queued deliveries")
        for queue in queues:
            queue.wake()
    elif not ok and was is not False:
        log.warning("Chatwoot is unreachable; messages are stored and will be delivered later")
    if health.on_change is not None:
        health.on_change()
    return ok


async def run_chatwoot_probe(
    ctx: Context, queues: Sequence[JobQueue], stop: trio.Event
) -> None:
    """Probe every 30 s while up and every 5 s while down, until ``stop``."""
    while not stop.is_set():
        ok = await probe_once(ctx, queues)
        with trio.move_on_after(UP_INTERVAL if ok else DOWN_INTERVAL):
            await stop.wait()
