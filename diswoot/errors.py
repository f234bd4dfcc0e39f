"""The daemon's root error classes: fatal ones (exit 78) and classified upstream failures.

Every client (Discord REST, Chatwoot, downloads) raises subclasses of :class:`UpstreamError`
that say whether retrying can help; :func:`diswoot.bridge.jobs.classify` reads only that.
"""

from __future__ import annotations


class FatalError(Exception):
    """A problem a restart cannot fix: the daemon exits 78 (``str(exc)`` says what to do)."""


class FatalConfigurationError(FatalError):
    """A configuration or authentication problem (the message never contains a secret)."""


class UpstreamError(Exception):
    """A request to another service failed.

    ``transient``: the same request may succeed later (network, timeout, 5xx, 429); otherwise
    it never will as it is.  ``retry_after``: seconds the service asked us to wait, if it did.
    """

    transient: bool = False
    retry_after: float | None = None


def find_fatal(exc: BaseException) -> BaseException | None:
    """The first fatal error inside ``exc`` (which may be a nested exception group)."""
    if isinstance(exc, FatalError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_fatal(inner)
            if found is not None:
                return found
    return None
