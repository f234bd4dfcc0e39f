"""The plugin contract: enrich Chatwoot contacts with data from other systems.

A plugin is any object with a ``name``, a sync ``init(env) -> bool`` (False disables it) and the
async hooks ``enrich_contact(user)`` and ``shutdown()``. Third-party plugins are published as
``importlib.metadata`` entry points in the ``diswoot.plugins`` group (see ``registry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class DiscordUser:
    """The Discord user a contact is created or updated for."""

    id: str
    username: str
    global_name: str | None = None
    avatar_url: str | None = None

    @property
    def display_name(self) -> str:
        """What Chatwoot shows as the contact name: global name, else username."""
        return self.global_name or self.username


@dataclass(frozen=True)
class Enrichment:
    """Extra contact data: an email and custom attributes (e.g. ``user_id``)."""

    email: str | None = None
    custom_attributes: dict[str, Any] = field(default_factory=dict)

    def merged_with(self, later: Enrichment) -> Enrichment:
        """``later`` wins for the email (when it has one) and for clashing attribute keys."""
        return Enrichment(
            email=later.email or self.email,
            custom_attributes={**self.custom_attributes, **later.custom_attributes},
        )


@runtime_checkable
class DiswootPlugin(Protocol):
    """What the registry expects of a plugin."""

    name: str

    def init(self, env: Mapping[str, str]) -> bool:
        """Read configuration from ``env`` (environment incl. ``.env``); True = enabled."""
        ...

    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        """Data to merge into the user's Chatwoot contact, or None if nothing is known."""
        ...

    async def shutdown(self) -> None:
        """Release resources (HTTP clients...)."""
        ...


__all__ = ["DiscordUser", "DiswootPlugin", "Enrichment"]
