"""How the fakes serve HTTP: hypercorn on a free port of 127.0.0.1, quiet, quick to stop."""

from __future__ import annotations

from hypercorn.config import Config as HypercornConfig


def loopback_config() -> HypercornConfig:
    """A hypercorn config bound to ``127.0.0.1:0``, without access or error logs."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    return config
