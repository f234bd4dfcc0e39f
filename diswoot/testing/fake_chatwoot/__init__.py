"""FakeChatwoot: a small, faithful Chatwoot v4.15.1 (one account, one API inbox) for tests.

The layers, each a class built on the one before it:

* :mod:`.records`: what the fake saw and sent (requests, webhook deliveries), Rails JSON;
* :mod:`.state`: the account's records (contacts, conversations, messages) and lookups;
* :mod:`.shapes`: how they are presented (REST answers, webhook payloads);
* :mod:`.model`: what changes them, and the webhooks each change emits;
* :mod:`.routes`: the REST and public endpoints;
* :mod:`.server`: :class:`FakeChatwoot` itself: the app and its middleware (latency, outages,
  injected failures, rate limits, auth, OpenAPI checks), the webhook sender, test controls.
"""

from diswoot.testing.fake_chatwoot.records import (
    INCOMING,
    RecordedFile,
    RecordedRequest,
    WebhookDelivery,
    default_working_hours,
    iso,
    rails_json,
)
from diswoot.testing.fake_chatwoot.server import FakeChatwoot

__all__ = [
    "INCOMING",
    "FakeChatwoot",
    "RecordedFile",
    "RecordedRequest",
    "WebhookDelivery",
    "default_working_hours",
    "iso",
    "rails_json",
]
