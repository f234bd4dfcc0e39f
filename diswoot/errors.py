"""Errors that end the daemon with a clear message and exit status 78 (do not restart)."""

from __future__ import annotations


class FatalConfigurationError(Exception):
    """A configuration or authentication problem that a restart cannot fix.

    ``str(exc)`` is an actionable message for the operator (never containing a secret).
    """


def find_fatal(exc: BaseException) -> BaseException | None:
    """The first fatal error inside ``exc`` (which may be a nested exception group)."""
    from diswoot.gateway.runner import GatewayFatalError

    if isinstance(exc, FatalConfigurationError | GatewayFatalError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_fatal(inner)
            if found is not None:
                return found
    return None
