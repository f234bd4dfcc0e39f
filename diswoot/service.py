"""The daemon: one root nursery owning every long-lived task.

Data flow (each arrow is an explicit argument)::

    Discord gateway -ws-> gateway.runner -events_tx-> router -> inbound.queue -> Chatwoot REST
    Chatwoot -POST /webhook-> webhook.app -COMMIT-> outbound.queue -> Discord REST
    Discord -INTERACTION (gateway or POST /interactions)-> interactions -> Chatwoot / Discord

Every long-lived task but the HTTP server runs under :func:`diswoot.supervise.supervised`: a
crash is logged and the task restarted with backoff; only fatal configuration errors end the
daemon (exit 78).  The gateway retries for as long as Discord is unreachable, while webhooks
are served and stored.

Shutdown (SIGTERM/SIGINT, or :class:`Daemon.stop`): the HTTP server stops accepting, the
gateway closes with a resumable code and closes its channel, the router drains what the gateway
had already handed over into SQLite, queues finish their in-flight jobs (pending ones stay
stored for the next start), then everything returns and the process exits 0.  A signal during
start-up ends the start-up at once (exit 0).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio

from diswoot import __version__, early_signals, systemd
from diswoot.bridge.chatwoot_probe import run_chatwoot_probe
from diswoot.bridge.inbound import InboundBridge
from diswoot.bridge.interactions import InteractionRouter
from diswoot.bridge.outbound import OutboundBridge
from diswoot.bridge.presence import run_presence
from diswoot.bridge.retention import run_retention
from diswoot.bridge.router import Intake, route_events
from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.inbox_cache import InboxCache
from diswoot.config import Config, read_environment
from diswoot.context import Context
from diswoot.errors import FatalConfigurationError
from diswoot.fatal_checks import (
    check_chatwoot_credentials,
    check_database,
    refuse_rejected_tokens,
)
from diswoot.gateway.events import GatewayEvent, GatewayStatus, Presence, SessionState
from diswoot.gateway.runner import GatewaySettings, run_gateway
from diswoot.health import Health
from diswoot.http_pool import CHATWOOT_CONNECTIONS, DISCORD_CONNECTIONS, http_client
from diswoot.metrics import Metrics
from diswoot.plugins.registry import PluginRegistry
from diswoot.rest.client import DiscordRest
from diswoot.rest.errors import DiscordHTTPError
from diswoot.resume_point import ResumePoint, load_session
from diswoot.store import Store, open_store
from diswoot.supervise import supervised
from diswoot.webhook.app import create_app
from diswoot.webhook.server import serve_http

log = logging.getLogger("diswoot.service")

GRACE_SECONDS = 10.0


@dataclass
class Daemon:
    """Handles to a running daemon, for tests and the sandbox (``run(..., task_status)``)."""

    ctx: Context
    stop_event: trio.Event
    http_port: int
    inbound: InboundBridge
    outbound: OutboundBridge
    interactions: InteractionRouter
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self.stop_event.set()


async def run(
    cfg: Config,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (or ``Daemon.stop()``).

    The signal handlers come first: a signal during start-up (the store opening, Chatwoot
    being probed) cancels the start-up and returns at once; later, it starts the graceful
    shutdown, and a second signal cuts that short.
    """
    stop = trio.Event()
    startup = _Startup(trio.CancelScope())
    with _signal_receiver(handle_signals) as signals:
        early = early_signals.received() if handle_signals else None
        if early is not None:  # before the loop listened (python -m diswoot remembered it)
            log.info("received %s during start-up; stopping", signal.Signals(early).name)
            return
        async with trio.open_nursery() as nursery:
            if signals is not None:
                nursery.start_soon(_watch_signals, signals, stop, startup)
            with startup.scope:
                log.info("diswoot %s starting (database %s)", __version__, cfg.db_path)
                await _run(cfg, stop, startup, task_status)
            if startup.scope.cancelled_caught and not startup.done:
                log.info("start-up interrupted")
            nursery.cancel_scope.cancel()
    log.info("diswoot stopped")


@dataclass
class _Startup:
    """The daemon's outermost cancel scope; ``done`` once every service runs."""

    scope: trio.CancelScope
    done: bool = False


async def _run(
    cfg: Config, stop: trio.Event, startup: _Startup, task_status: trio.TaskStatus[Daemon]
) -> None:
    await check_database(cfg)
    async with (
        open_store(cfg.db_path) as store,
        http_client(DISCORD_CONNECTIONS) as discord_http,
        http_client(CHATWOOT_CONNECTIONS) as chatwoot_http,
    ):
        presence_tx, presence_rx = trio.open_memory_channel[Presence](8)
        ctx = await _build_context(cfg, store, discord_http, chatwoot_http, presence_tx)
        try:
            await _run_services(ctx, presence_rx, stop, startup, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await ctx.plugins.aclose()


async def _build_context(
    cfg: Config,
    store: Store,
    discord_http: httpx.AsyncClient,
    chatwoot_http: httpx.AsyncClient,
    presence_tx: trio.MemorySendChannel[Presence],
) -> Context:
    discord = DiscordRest(
        discord_http, base_url=cfg.discord_api_base_url, token=cfg.discord_token
    )
    chatwoot = ChatwootClient(
        chatwoot_http,
        base_url=cfg.chatwoot_base_url,
        account_id=cfg.chatwoot_account_id,
        inbox_id=cfg.chatwoot_inbox_id,
        api_token=cfg.chatwoot_api_token,
    )
    gateway_status = GatewayStatus()
    return Context(
        cfg=cfg,
        store=store,
        discord=discord,
        chatwoot=chatwoot,
        inbox=InboxCache(chatwoot),
        plugins=PluginRegistry.discover(read_environment()),
        metrics=Metrics(),
        health=Health(gateway=gateway_status),
        gateway=gateway_status,
        presence_tx=presence_tx,
    )


async def _run_services(
    ctx: Context,
    presence_rx: trio.MemoryReceiveChannel[Presence],
    stop: trio.Event,
    startup: _Startup,
    task_status: trio.TaskStatus[Daemon],
) -> None:
    cfg = ctx.cfg
    events_tx, events_rx = trio.open_memory_channel[GatewayEvent](64)
    status = systemd.StatusReporter()
    ctx.gateway.on_change = lambda gw: _report_status(ctx, status)
    ctx.health.on_change = lambda: _report_status(ctx, status)

    outbound = OutboundBridge(ctx)
    inbound = InboundBridge(ctx, outbound)
    interactions = InteractionRouter(ctx, inbound=inbound, outbound=outbound)
    queues = [inbound.queue, outbound.queue, *outbound.extra_queues]
    ctx.health.queue_depths = lambda: _queue_depths(ctx, queues)
    ctx.metrics.observe(
        gateway=ctx.gateway, rest=ctx.discord.stats, queues=queues,
        store_batches=lambda: ctx.store.batches, checkpoints=ctx.store.checkpoints,
    )

    await check_chatwoot_credentials(ctx)
    session = await load_session(ctx.store)
    intake = Intake()  # what the router has yet to handle (the session is saved only past it)
    settings = GatewaySettings(
        token=cfg.discord_token,
        compress=cfg.discord_gateway_compress,
        initial_presence=None,
    )

    async with trio.open_nursery() as nursery:

        async def start(name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
            """Start a supervised task whose ``fn`` reports started itself."""
            await nursery.start(partial(supervised, name, stop, fn, *args, reports_started=True))

        def start_soon(name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
            nursery.start_soon(partial(supervised, name, stop, fn, *args), name=name)

        for queue in queues:
            await start(f"{queue.name} queue", queue.run, stop)
        await start("inbox cache", _until_stopped, stop, ctx.inbox.run)
        start_soon("chatwoot probe", run_chatwoot_probe, ctx, [inbound.queue,
                   *outbound.extra_queues], stop)
        resume_point = ResumePoint(ctx.store, session, intake, ctx.gateway)
        save = resume_point.save
        nursery.start_soon(
            _gateway_task, settings, ctx, events_tx, presence_rx, stop, session, save
        )
        nursery.start_soon(_router_task, events_rx, ctx, inbound, interactions, stop, intake)
        start_soon("session saver", _until_stopped, stop, resume_point.keep_saved)
        nursery.start_soon(
            _until_stopped, stop, partial(refuse_rejected_tokens, ctx.discord, ctx.chatwoot)
        )
        start_soon("presence", run_presence, ctx, stop)
        start_soon("retention", partial(run_retention, clock=ctx.clock), ctx.store, cfg,
                   ctx.metrics, stop)
        await start("outbound background", _background, outbound.start_background, stop)
        await start("inbound background", _background, inbound.start_background, stop)
        app = create_app(ctx, outbound=outbound, interactions=interactions)
        port = await nursery.start(serve_http, app, cfg, stop)
        start_soon("systemd watchdog", systemd.watchdog_task, stop)
        systemd.ready()
        _report_status(ctx, status)
        log.info("webhook server listening on %s:%d", cfg.webhook_host, port)
        startup.done = True
        task_status.started(
            Daemon(
                ctx=ctx,
                stop_event=stop,
                http_port=port,
                inbound=inbound,
                outbound=outbound,
                interactions=interactions,
            )
        )
        await stop.wait()
        log.info("shutting down: finishing in-flight work")
        ctx.health.stopping = True
        systemd.stopping()
        nursery.cancel_scope.deadline = trio.current_time() + GRACE_SECONDS
    await save()


async def _background(
    start: Callable[[trio.Nursery, trio.Event], Awaitable[None]],
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A component's background tasks (``start(nursery, stop)``) in a nursery of their own,
    so that they are supervised (and restarted) together."""
    async with trio.open_nursery() as nursery:
        await start(nursery, stop)
        task_status.started()


async def _until_stopped(
    stop: trio.Event,
    fn: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a forever-task (it reports readiness itself) and cancel it once ``stop`` is set."""
    async with trio.open_nursery() as nursery:
        await nursery.start(fn)
        task_status.started()
        await stop.wait()
        nursery.cancel_scope.cancel()


async def _gateway_task(
    settings: GatewaySettings,
    ctx: Context,
    events_tx: trio.MemorySendChannel[GatewayEvent],
    presence_rx: trio.MemoryReceiveChannel[Presence],
    stop: trio.Event,
    session: SessionState,
    save: Callable[[], Awaitable[object]],
) -> None:
    """The supervised gateway; closing ``events_tx`` at the end lets the router drain and end."""
    async with events_tx:
        await supervised(
            "gateway", stop, _run_gateway, settings, ctx, events_tx, presence_rx, stop, session,
            save,
        )


async def _run_gateway(
    settings: GatewaySettings,
    ctx: Context,
    events_tx: trio.MemorySendChannel[GatewayEvent],
    presence_rx: trio.MemoryReceiveChannel[Presence],
    stop: trio.Event,
    session: SessionState,
    save: Callable[[], Awaitable[object]],
) -> None:
    """Run the gateway (on its own clone of ``events_tx``, which it closes); when it ends
    other than by shutdown, ``save`` the resumable session so a restart can RESUME."""

    async def fetch_gateway() -> dict[str, Any]:
        try:
            return await ctx.discord.get_gateway_bot()
        except DiscordHTTPError as exc:
            if exc.status == 401:
                raise FatalConfigurationError(
                    "the Discord token was rejected (401): reset it in the Developer Portal "
                    "(Bot > Reset Token) and update DISCORD_TOKEN"
                ) from None
            raise

    try:
        await run_gateway(
            settings,
            fetch_gateway,
            events_tx.clone(),
            presence_rx,
            stop,
            session=session,
            status=ctx.gateway,
        )
    finally:
        if not stop.is_set():  # a crash; on shutdown it is saved once the router has drained
            with trio.CancelScope(shield=True):
                await save()


async def _router_task(
    events_rx: trio.MemoryReceiveChannel[GatewayEvent],
    ctx: Context,
    inbound: InboundBridge,
    interactions: InteractionRouter,
    stop: trio.Event,
    intake: Intake,
) -> None:
    """The supervised router: each run reads from its own clone of ``events_rx``."""

    async def route() -> None:
        await route_events(events_rx.clone(), ctx, inbound, interactions, intake)

    async with events_rx:  # what is left when it closes is never taken: never claimed
        await supervised("router", stop, route)


@contextmanager
def _signal_receiver(enabled: bool) -> Iterator[AsyncIterator[int] | None]:
    """SIGTERM/SIGINT (and the SIGUSR2 test hook) delivered to the trio loop, if ``enabled``."""
    if not enabled:
        yield None
        return
    hooks = os.environ.get("DISWOOT_TEST_HOOKS") == "1"
    wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR2] if hooks else [])
    with trio.open_signal_receiver(*wanted) as signals:
        yield signals


async def _watch_signals(signals: AsyncIterator[int], stop: trio.Event, startup: _Startup) -> None:
    """SIGTERM/SIGINT start the graceful shutdown (during start-up: end it at once); a second
    one ends the graceful shutdown at once.

    With DISWOOT_TEST_HOOKS=1 (the real-systemd test only), SIGUSR2 blocks the trio loop for
    60 s so the test can watch the systemd watchdog restart a hung daemon.
    """
    async for signum in signals:
        if signum == signal.SIGUSR2:
            log.warning("test hook: blocking the event loop for 60 s")
            time.sleep(60)  # noqa: ASYNC251 - deliberately blocking, test hook
            continue
        log.info("received %s", signal.Signals(signum).name)
        if stop.is_set() or not startup.done:
            startup.scope.cancel()
        stop.set()


def _queue_depths(ctx: Context, queues: list[Any]) -> dict[str, dict[str, Any]]:
    now = ctx.clock()
    depths: dict[str, dict[str, Any]] = {}
    for queue in queues:
        oldest = queue.oldest_created_at()
        depths[queue.name] = {
            "pending": queue.depth,
            "dead": queue.counters.dead,
            "oldest_pending_age_seconds": round(now - oldest, 3) if oldest else None,
        }
    return depths


def _report_status(ctx: Context, status: systemd.StatusReporter) -> None:
    gw = ctx.gateway
    if gw.state == "ready":
        gateway = f"ready as {gw.user_tag}"
    elif gw.state == "resuming":
        gateway = "resuming Discord session"
    else:
        gateway = f"Discord {gw.state}"
    chatwoot = "Chatwoot unreachable" if ctx.health.chatwoot_reachable is False else None
    queued = sum(d["pending"] for d in ctx.health.queue_depths().values())
    status.update(gateway=gateway, chatwoot=chatwoot, queued=f"queued {queued}")

