"""The daemon: one root nursery owning every long-lived task.

Data flow (each arrow is an explicit argument)::

    Discord gateway -ws-> gateway.runner -events_tx-> router -> inbound.queue -> Chatwoot REST
    Chatwoot -POST /webhook-> webhook.app -COMMIT-> outbound.queue -> Discord REST
    Discord -INTERACTION (gateway or POST /interactions)-> interactions -> Chatwoot / Discord

Shutdown (SIGTERM/SIGINT, or :class:`Daemon.stop`): the HTTP server stops accepting, the
gateway closes with a resumable code and closes its channel, the router drains what the gateway
had already handed over into SQLite, queues finish their in-flight jobs (pending ones stay
stored for the next start), then everything returns and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from diswoot import __version__, systemd
from diswoot.bridge.inbound import InboundBridge
from diswoot.bridge.interactions import InteractionRouter
from diswoot.bridge.outbound import OutboundBridge
from diswoot.bridge.presence import run_presence
from diswoot.bridge.router import route_events
from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnavailable
from diswoot.chatwoot.inbox_cache import InboxCache
from diswoot.chatwoot.probe import run_chatwoot_probe
from diswoot.config import Config, read_environment
from diswoot.context import Context
from diswoot.errors import FatalConfigurationError
from diswoot.gateway.events import GatewayEvent, GatewayStatus, Presence, SessionState
from diswoot.gateway.runner import GatewaySettings, run_gateway
from diswoot.health import Health
from diswoot.metrics import Metrics
from diswoot.plugins.registry import PluginRegistry
from diswoot.rest.client import DiscordRest
from diswoot.rest.errors import DiscordHTTPError
from diswoot.store import Store, open_store
from diswoot.store import queries as q
from diswoot.webhook.app import create_app
from diswoot.webhook.server import serve_http

log = logging.getLogger("diswoot.service")

GRACE_SECONDS = 10.0
SESSION_KEY = "gateway_session"


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


DISCORD_CONNECTIONS = 16
"""Discord allows 50 requests/s: 16 connections carry that at up to 300 ms per request."""
CHATWOOT_CONNECTIONS = 32
"""As many as the inbound lanes that run at once (``inbound.CONCURRENCY``)."""


def http_client(connections: int = CHATWOOT_CONNECTIONS) -> httpx.AsyncClient:
    """A long-lived HTTP client for one upstream (connection pooling, sane timeouts).

    Each upstream gets its own small pool: httpcore scans every pooled connection (for idle
    ones, quadratically) on each request and response, so a pool of 200 shared by both
    upstreams cost more CPU than the requests themselves.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
    )


async def run(
    cfg: Config,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (or ``Daemon.stop()``)."""
    stop = trio.Event()
    log.info("diswoot %s starting (database %s)", __version__, cfg.db_path)
    async with (
        open_store(cfg.db_path) as store,
        http_client(DISCORD_CONNECTIONS) as discord_http,
        http_client(CHATWOOT_CONNECTIONS) as chatwoot_http,
    ):
        ctx = await _build_context(cfg, store, discord_http, chatwoot_http)
        try:
            await _run_services(ctx, stop, handle_signals, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await ctx.plugins.aclose()
    log.info("diswoot stopped")


async def _build_context(
    cfg: Config, store: Store, discord_http: httpx.AsyncClient, chatwoot_http: httpx.AsyncClient
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
    presence_tx, _ = trio.open_memory_channel[Presence](0)  # replaced in _run_services
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
    stop: trio.Event,
    handle_signals: bool,
    task_status: trio.TaskStatus[Daemon],
) -> None:
    cfg = ctx.cfg
    events_tx, events_rx = trio.open_memory_channel[GatewayEvent](64)
    presence_tx, presence_rx = trio.open_memory_channel[Presence](8)
    ctx.presence_tx = presence_tx
    status = systemd.StatusReporter()
    ctx.gateway.on_change = lambda gw: _report_status(ctx, status)
    ctx.health.on_change = lambda: _report_status(ctx, status)

    outbound = OutboundBridge(ctx)
    inbound = InboundBridge(ctx, outbound)
    interactions = InteractionRouter(ctx, inbound=inbound, outbound=outbound)
    queues = [inbound.queue, outbound.queue, *outbound.extra_queues]
    ctx.health.queue_depths = lambda: _queue_depths(ctx, queues)
    ctx.metrics.observe(gateway=ctx.gateway, rest=ctx.discord.stats, queues=queues)

    await _check_chatwoot_credentials(ctx)
    session = SessionState(**(await ctx.store.call(q.get_value, SESSION_KEY) or {}))
    settings = GatewaySettings(
        token=cfg.discord_token,
        compress=cfg.discord_gateway_compress,
        initial_presence=None,
    )

    async with trio.open_nursery() as nursery:
        for queue in queues:
            await nursery.start(queue.run, stop)
        await nursery.start(_until_stopped, stop, ctx.inbox.run)
        nursery.start_soon(run_chatwoot_probe, ctx, [inbound.queue, *outbound.extra_queues], stop)
        nursery.start_soon(
            _supervise_gateway, settings, ctx, events_tx, presence_rx, stop, session
        )
        nursery.start_soon(route_events, events_rx, ctx, inbound, interactions)
        nursery.start_soon(run_presence, ctx, stop)
        await outbound.start_background(nursery, stop)
        await inbound.start_background(nursery, stop)
        app = create_app(ctx, outbound=outbound, interactions=interactions)
        port = await nursery.start(serve_http, app, cfg, stop)
        nursery.start_soon(systemd.watchdog_task, stop)
        systemd.ready()
        _report_status(ctx, status)
        log.info("webhook server listening on %s:%d", cfg.webhook_host, port)
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
        if handle_signals:
            nursery.start_soon(_wait_for_signal, stop)
        await stop.wait()
        log.info("shutting down: finishing in-flight work")
        ctx.health.stopping = True
        systemd.stopping()
        nursery.cancel_scope.deadline = trio.current_time() + GRACE_SECONDS
    await _save_session(ctx, session)


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


async def _supervise_gateway(
    settings: GatewaySettings,
    ctx: Context,
    events_tx: trio.MemorySendChannel[GatewayEvent],
    presence_rx: trio.MemoryReceiveChannel[Presence],
    stop: trio.Event,
    session: SessionState,
) -> None:
    """Run the gateway; persist the resumable session so a restart can RESUME."""
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
            events_tx,
            presence_rx,
            stop,
            session=session,
            status=ctx.gateway,
        )
    finally:
        with trio.CancelScope(shield=True):
            await _save_session(ctx, session)


async def _check_chatwoot_credentials(ctx: Context) -> None:
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


async def _save_session(ctx: Context, session: SessionState) -> None:
    value = {
        "session_id": session.session_id,
        "seq": session.seq,
        "resume_url": session.resume_url,
        "user_id": session.user_id,
    }
    await ctx.store.call(q.set_value, SESSION_KEY, value)


async def _wait_for_signal(stop: trio.Event) -> None:
    """SIGTERM/SIGINT start the graceful shutdown.

    With DISWOOT_TEST_HOOKS=1 (the real-systemd test only), SIGUSR2 blocks the trio loop for
    60 s so the test can watch the systemd watchdog restart a hung daemon.
    """
    hooks = os.environ.get("DISWOOT_TEST_HOOKS") == "1"
    wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR2] if hooks else [])
    with trio.open_signal_receiver(*wanted) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR2:
                log.warning("test hook: blocking the event loop for 60 s")
                time.sleep(60)  # noqa: ASYNC251 - deliberately blocking, test hook
                continue
            log.info("received %s", signal.Signals(signum).name)
            stop.set()
            return


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

