"""The shared dependencies of the bridge, built once by :mod:`diswoot.service`.

Every component receives this object (or the parts it needs) explicitly; nothing is global.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.inbox_cache import InboxCache
from diswoot.config import Config
from diswoot.gateway.events import GatewayStatus, Presence
from diswoot.health import Health
from diswoot.metrics import Metrics
from diswoot.plugins.registry import PluginRegistry
from diswoot.rest.client import DiscordRest
from diswoot.store import Store


@dataclass
class Context:
    cfg: Config
    store: Store
    discord: DiscordRest
    chatwoot: ChatwootClient
    inbox: InboxCache
    plugins: PluginRegistry
    metrics: Metrics
    health: Health
    gateway: GatewayStatus
    presence_tx: trio.MemorySendChannel[Presence]
    application_id: str | None = None
    clock: Callable[[], float] = field(default=time.time)

    @property
    def app_id(self) -> str:
        """The application id: from READY when known, else DISCORD_CLIENT_ID."""
        return self.application_id or self.cfg.discord_client_id
