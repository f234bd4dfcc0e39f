"""Exceptions raised by :class:`diswoot.chatwoot.client.ChatwootClient`.

Two families: :class:`ChatwootUnavailable` (network error, timeout, 5xx, 429: try again later)
and :class:`ChatwootError` (any other 4xx: a bug or bad configuration; retrying will not help).
"""

from __future__ import annotations

from typing import Any

from diswoot.errors import UpstreamError


class ChatwootUnavailable(UpstreamError):
    """Chatwoot could not be reached or asked us to come back later; retry with backoff.

    ``status`` is the HTTP status (5xx or 429), or ``None`` for network errors and timeouts.
    """

    transient = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ChatwootError(UpstreamError):
    """Chatwoot rejected the request (4xx): a bug or a configuration problem.

    ``status`` is the HTTP status, ``body`` the decoded response (JSON or text) and ``hint``
    a sentence telling the operator what to look at.
    """

    def __init__(self, request: str, status: int, body: Any, hint: str) -> None:
        self.request = request
        self.status = status
        self.body = body
        self.hint = hint
        super().__init__(f"Chatwoot {request} answered {status}: {hint} ({_brief(body)})")


class ChatwootTokenRejected(ChatwootError):
    """401 "Invalid Access Token": CHATWOOT_API_TOKEN was revoked or regenerated.  The request
    is not the problem, so the job waits (transient) while the daemon stops with 78."""

    transient = True


INVALID_TOKEN_ERROR = "Invalid Access Token"  # noqa: S105  (an error text, not a secret)
"""Chatwoot's words for a token it does not know (``access_token_auth_helper.rb``); its other
401s (Pundit, agent-bot routes) are about one request's access, not the token."""


class ChatwootNotFound(ChatwootError):
    """404: the contact, conversation, message, inbox or CSAT survey does not exist."""


class ChatwootUnprocessable(ChatwootError):
    """422: validation failed (duplicate identifier, missing field, ...).

    Chatwoot's per-conversation message limit also answers 422 ("Too many messages"): that
    one is transient, and worth a minute's wait.
    """

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return "Too many messages" in str(self.body)

    @property
    def retry_after(self) -> float | None:  # type: ignore[override]
        return THROTTLE_DELAY if self.transient else None


THROTTLE_DELAY = 60.0
"""Chatwoot allows 200 messages per minute per conversation."""


class ChatwootCsatLocked(ChatwootUnprocessable):
    """422 from the public CSAT API: the survey is older than 14 days and can no longer change."""


def _brief(body: Any) -> str:
    """The server's own words, shortened for a log line."""
    if isinstance(body, dict):
        for key in ("error", "message", "errors"):
            if key in body:
                return f"{key}: {str(body[key])[:200]}"
    text = str(body).strip()
    return text[:200] if text else "empty body"


__all__ = [
    "ChatwootCsatLocked",
    "ChatwootError",
    "ChatwootNotFound",
    "ChatwootUnavailable",
    "ChatwootUnprocessable",
]
