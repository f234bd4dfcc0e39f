"""Diswoot: a durable bridge between Discord direct messages and Chatwoot."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client (click, pygments, rich) whenever those happen to be
# installed, for an ``httpx`` console script the daemon never runs: about 0.5 MB of memory and
# 15 ms of start-up.  httpx 0.28 guards that import with ``except ImportError`` (and then
# defines a stub ``main``); a None entry in ``sys.modules`` makes the import fail that way.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
