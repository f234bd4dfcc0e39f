"""Singlty enrichment: email and platform user id looked up by Discord id.

Enabled only when ``SINGLTY_API_URL`` and ``SINGLTY_API_KEY`` are both set. Calls
``GET {url}/internal/users/by-discord/{discord_id}`` with an ``x-api-key`` header; 404 means
"not a Singlty user".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from diswoot.plugins.base import DiscordUser, Enrichment
from diswoot.tls import client_context

log = logging.getLogger(__name__)

USER_ID_KEYS = ("userId", "user_id", "id", "_id")


def parse_user(body: Any) -> Enrichment | None:
    """Map the backend's answer (``{"data": {...}}`` or the bare user) to an Enrichment."""
    if isinstance(body, Mapping):
        for wrapper in ("data", "user"):
            if isinstance(body.get(wrapper), Mapping):
                body = body[wrapper]
                break
    if not isinstance(body, Mapping):
        return None
    user_id = next(
        (
            str(body[k])
            for k in USER_ID_KEYS
            if isinstance(body.get(k), str | int)
            and not isinstance(body.get(k), bool)
            and str(body[k])
        ),
        None,
    )
    email = body.get("email")
    email = email.strip() if isinstance(email, str) and "@" in email else None
    if user_id is None and email is None:
        return None
    return Enrichment(email=email, custom_attributes={"user_id": user_id} if user_id else {})


class SingltyPlugin:
    """Built-in plugin; pass ``client`` to share an ``httpx.AsyncClient`` (not closed here)."""

    name = "singlty"

    def __init__(self, client: httpx.AsyncClient | None = None, *, timeout: float = 5.0) -> None:
        self._client = client
        self._owns_client = client is None
        self._timeout = timeout
        self._url = ""
        self._key = ""

    def init(self, env: Mapping[str, str]) -> bool:
        url = env.get("SINGLTY_API_URL", "").strip().rstrip("/")
        key = env.get("SINGLTY_API_KEY", "").strip()
        if not url or not key:
            return False
        if not url.startswith(("http://", "https://")):
            log.warning("SINGLTY_API_URL must be an http(s) URL; the Singlty plugin is disabled")
            return False
        self._url, self._key = url, key
        log.info("Singlty plugin enabled (%s)", httpx.URL(url).host)
        return True

    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=client_context())
        response = await self._client.get(
            f"{self._url}/internal/users/by-discord/{quote(user.id, safe='')}",
            headers={"x-api-key": self._key, "accept": "application/json"},
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return parse_user(response.json())

    async def shutdown(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


__all__ = ["SingltyPlugin", "parse_user"]
