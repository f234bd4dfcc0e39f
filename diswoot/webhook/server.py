"""Serve the quart-trio app with hypercorn's trio worker inside the daemon's nursery."""

from __future__ import annotations

import logging
from functools import partial
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from diswoot.config import Config
from diswoot.errors import FatalConfigurationError

log = logging.getLogger("diswoot.http")


def hypercorn_config(cfg: Config) -> HypercornConfig:
    config = HypercornConfig()
    host = cfg.webhook_host
    config.bind = [f"[{host}]:{cfg.webhook_port}" if ":" in host else f"{host}:{cfg.webhook_port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("diswoot.http.server")
    # in-flight webhooks only need milliseconds to be stored; idle keep-alive connections
    # would otherwise hold the shutdown for the whole timeout
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30.0
    config.h11_max_incomplete_size = 64 * 1024  # request line + headers
    config.include_server_header = False
    return config


async def serve_http(
    app: QuartTrio,
    cfg: Config,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop``; reports the bound port (useful with WEBHOOK_PORT=0).

    An address that cannot be bound (a host that does not resolve or is not this machine's, a
    port in use or not allowed) is a configuration error: exit 78 with what to change.
    """
    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(
                partial(serve, app, hypercorn_config(cfg), shutdown_trigger=stop.wait)
            )
        except* OSError as group:
            exc: BaseException = group
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FatalConfigurationError(
                f"cannot listen on WEBHOOK_HOST={cfg.webhook_host} WEBHOOK_PORT="
                f"{cfg.webhook_port}: {reason} (set a local address and a free port)"
            ) from None
        port = urlsplit(binds[0]).port or cfg.webhook_port
        task_status.started(port)
