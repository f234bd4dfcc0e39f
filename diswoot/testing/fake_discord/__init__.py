"""FakeDiscord: a faithful fake of the Discord REST API v10 routes Diswoot uses, with its gateway.

The layers, each a class built on the one before it:

* :mod:`.records`: what the fake saw (requests), error answers, rate-limit windows, interactions;
* :mod:`.state`: users, DM channels, messages and attachments;
* :mod:`.users`: what users do (DMs of every shape, edits, deletions, typing, interactions);
* :mod:`.routes`: the REST routes;
* :mod:`.server`: :class:`FakeDiscord` itself: the ASGI app, spec checks, rate limits.
"""

from diswoot.testing.fake_discord.records import GatewayLike, RecordedFile, RecordedRequest
from diswoot.testing.fake_discord.server import FakeDiscord

__all__ = ["FakeDiscord", "GatewayLike", "RecordedFile", "RecordedRequest"]
