"""Plugin discovery and lifecycle: built-ins plus ``diswoot.plugins`` entry points.

A plugin that fails to load, to initialise or to enrich is logged and skipped; it never stops
the bridge. Log lines carry the exception type and message with every secret-looking value of
the environment redacted.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import trio

from diswoot.config import SECRET_VARIABLES
from diswoot.plugins.base import DiscordUser, DiswootPlugin, Enrichment

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "diswoot.plugins"
SHUTDOWN_TIMEOUT = 5.0
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def _secrets(env: Mapping[str, str]) -> list[str]:
    values = {
        v
        for k, v in env.items()
        if (k.upper() in SECRET_VARIABLES or _SECRET_NAME.search(k)) and len(v) >= 4
    }
    return sorted(values, key=len, reverse=True)


class PluginRegistry:
    """The enabled plugins; use as ``async with PluginRegistry.discover(env) as plugins``."""

    def __init__(self, enabled: Sequence[DiswootPlugin], *, secrets: Sequence[str] = ()) -> None:
        self.enabled: list[DiswootPlugin] = list(enabled)
        self._secrets = list(secrets)

    @classmethod
    def discover(
        cls, env: Mapping[str, str], *, builtins: Sequence[DiswootPlugin] | None = None
    ) -> PluginRegistry:
        """Initialise the built-ins (default: Singlty) and every entry-point plugin."""
        if builtins is None:
            from diswoot.plugins.singlty import SingltyPlugin

            builtins = [SingltyPlugin()]
        registry = cls([], secrets=_secrets(env))
        for plugin in [*builtins, *registry._load_entry_points()]:
            registry._try_init(plugin, env)
        names = ", ".join(p.name for p in registry.enabled) or "none"
        log.info("plugins enabled: %s", names)
        return registry

    def _load_entry_points(self) -> list[DiswootPlugin]:
        plugins: list[DiswootPlugin] = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj: Any = ep.load()
                if isinstance(obj, type) or not isinstance(obj, DiswootPlugin):
                    obj = obj() if callable(obj) else obj
            except Exception as exc:
                log.warning(
                    "plugin entry point %r failed to load: %s", ep.name, self._describe(exc)
                )
                continue
            if not isinstance(obj, DiswootPlugin):
                log.warning("plugin entry point %r is not a DiswootPlugin; skipped", ep.name)
                continue
            plugins.append(obj)
        return plugins

    def _try_init(self, plugin: DiswootPlugin, env: Mapping[str, str]) -> None:
        name = getattr(plugin, "name", type(plugin).__name__)
        if any(p.name == name for p in self.enabled):
            log.warning("plugin %r is already loaded; the duplicate is skipped", name)
            return
        try:
            enabled = plugin.init(env)
        except Exception as exc:
            log.warning("plugin %r failed to initialise: %s", name, self._describe(exc))
            return
        if enabled:
            self.enabled.append(plugin)
        else:
            log.debug("plugin %r is not configured; disabled", name)

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def enrich(
        self,
        user: DiscordUser,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a budget per plugin, not a deadline
    ) -> Enrichment:
        """Every plugin's enrichment, merged in plugin order (later plugins win).

        Plugins run concurrently, each under its own ``timeout``; failures and timeouts are
        logged and contribute nothing.
        """
        results: list[Enrichment | None] = [None] * len(self.enabled)

        async def run_one(index: int, plugin: DiswootPlugin) -> None:
            with trio.move_on_after(timeout) as scope:
                try:
                    results[index] = await plugin.enrich_contact(user)
                except Exception as exc:
                    log.warning(
                        "plugin %r could not enrich user %s: %s",
                        plugin.name,
                        user.id,
                        self._describe(exc),
                    )
            if scope.cancelled_caught:
                log.warning(
                    "plugin %r timed out after %.1fs enriching user %s",
                    plugin.name,
                    timeout,
                    user.id,
                )

        async with trio.open_nursery() as nursery:
            for index, plugin in enumerate(self.enabled):
                nursery.start_soon(run_one, index, plugin)

        merged = Enrichment()
        for result in results:
            if isinstance(result, Enrichment):
                merged = merged.merged_with(result)
        return merged

    async def aclose(self) -> None:
        """Shut every plugin down (shielded, each within ``SHUTDOWN_TIMEOUT``)."""
        for plugin in self.enabled:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                try:
                    await plugin.shutdown()
                except Exception as exc:
                    log.warning(
                        "plugin %r failed to shut down: %s", plugin.name, self._describe(exc)
                    )

    async def __aenter__(self) -> PluginRegistry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["ENTRY_POINT_GROUP", "PluginRegistry"]
