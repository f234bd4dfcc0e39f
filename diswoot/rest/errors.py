"""Exceptions raised by :class:`diswoot.rest.client.DiscordRest`."""

from __future__ import annotations

from typing import Any

from diswoot.errors import UpstreamError


class DiscordHTTPError(UpstreamError):
    """Discord answered with an error status; ``code`` is Discord's JSON error code."""

    def __init__(
        self,
        status: int,
        code: int | None,
        message: str,
        route: str,
        errors: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.route = route
        self.errors = errors
        code_text = f" code {code}" if code is not None else ""
        super().__init__(f"{route}: HTTP {status}{code_text}: {message}")

    @property
    def permanent(self) -> bool:
        """True for 4xx other than 429: retrying the same request cannot succeed."""
        return 400 <= self.status < 500 and self.status != 429

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return not self.permanent


class DiscordTokenRejected(DiscordHTTPError):
    """A 401 on a route the bot token authenticates: the token was reset or revoked.  The
    request is not the problem, so the job waits (transient) while the daemon stops with 78."""

    @property
    def permanent(self) -> bool:
        return False


class DiscordRateLimited(DiscordHTTPError):
    """A 429 that must not be retried now (Cloudflare ban, or too many 429s in a row)."""

    def __init__(self, message: str, route: str, retry_after: float | None) -> None:
        super().__init__(429, None, message, route)
        self.retry_after = retry_after


class RequestWithdrawn(Exception):
    """The caller's ``still_wanted`` said no when the request's turn came (after a rate-limit
    wait): nothing was sent."""


class DiscordUnavailable(UpstreamError):
    """Network failure or 5xx that persisted through the retries; transient."""

    transient = True

    def __init__(self, message: str, route: str) -> None:
        self.route = route
        super().__init__(f"{route}: {message}")
