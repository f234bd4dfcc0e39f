"""FakeChatwoot behaves like Chatwoot 4.15.1: state rules, webhook shapes, signing, failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from quart import request
from quart_trio import QuartTrio

from diswoot.chatwoot.client import ChatwootClient
from diswoot.chatwoot.models import ConversationEvent, MessageEvent, TypingEvent, parse_webhook
from diswoot.testing.fake_chatwoot import FakeChatwoot

SECRET = "7hUQ3w9kXz2cVbN4mP6rT8yA"
SUNDAY_NOON = datetime(2026, 6, 21, 12, 0, tzinfo=UTC).timestamp()


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records raw bodies and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.url = ""
        self.app = QuartTrio(__name__)
        self.app.add_url_rule("/hook", "hook", self._hook, methods=["POST"])

    async def _hook(self) -> tuple[str, int]:
        body = await request.get_data(as_text=False)
        assert isinstance(body, bytes)
        self.received.append((dict(request.headers), body))
        return "", self.status

    async def serve(self, nursery: trio.Nursery) -> None:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = config.errorlog = None
        binds = await nursery.start(partial(hypercorn.trio.serve, self.app, config))
        self.url = binds[0] + "/hook"


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    receiver = Receiver()
    await receiver.serve(nursery)
    return receiver


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def start(nursery: trio.Nursery, **kwargs: object) -> FakeChatwoot:
    fake = FakeChatwoot(**kwargs)  # type: ignore[arg-type]
    await fake.serve(nursery)
    return fake


def client_for(http: httpx.AsyncClient, fake: FakeChatwoot) -> ChatwootClient:
    return ChatwootClient(
        http, base_url=fake.base_url, account_id=1, inbox_id=7, api_token=fake.api_token
    )


async def new_conversation(client: ChatwootClient, identifier: str = "123") -> int:
    contact = await client.create_contact(name="alice", identifier=identifier)
    assert contact.source_id is not None
    conversation = await client.create_conversation(
        contact_id=contact.id, source_id=contact.source_id
    )
    return int(conversation["id"])


def events(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in receiver.received]


async def test_webhook_is_signed_like_chatwoot(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, webhook_urls=[receiver.url], webhook_secret=SECRET)
    with trio.fail_after(10):
        cid = await new_conversation(client_for(http, fake))
        await fake.wait_webhooks_delivered()
        receiver.received.clear()
        reply = await fake.agent_reply(cid, "<b>Tom & Jerry</b> ✓")
    # the first agent reply also fires conversation_updated (first_reply_created_at)
    kinds = [json.loads(body)["event"] for _, body in receiver.received]
    assert kinds == ["message_created", "conversation_updated"]
    headers, body = receiver.received[0]
    timestamp = headers["X-Chatwoot-Timestamp"]
    expected = (
        "sha256="
        + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    assert headers["X-Chatwoot-Signature"] == expected
    body_only = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Chatwoot-Signature"] != body_only
    assert headers["Content-Type"] == "application/json"
    assert uuid.UUID(headers["X-Chatwoot-Delivery"])
    assert b"\\u003cb\\u003eTom \\u0026 Jerry\\u003c/b\\u003e \xe2\x9c\x93" in body
    assert b"<" not in body and b"&" not in body
    payload = json.loads(body)
    assert payload["event"] == "message_created" and payload["id"] == reply["id"]
    assert payload["content"] == "<b>Tom & Jerry</b> ✓"
    assert payload["message_type"] == "outgoing" and payload["sender"]["type"] == "user"
    assert payload["created_at"].endswith("Z") and "T" in payload["created_at"]
    assert payload["account"] == {"id": 1, "name": "Acme"}
    assert "uuid" not in payload["conversation"]
    assert fake.sign(body, int(timestamp)) == expected


async def test_each_destination_gets_its_own_delivery_id(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    first, second = Receiver(), Receiver()
    await first.serve(nursery)
    await second.serve(nursery)
    fake = await start(nursery, webhook_urls=[first.url, second.url])
    with trio.fail_after(10):
        cid = await new_conversation(client_for(http, fake))
        await fake.agent_typing(cid, True)
    (h1, b1), (h2, b2) = first.received[-1], second.received[-1]
    assert b1 == b2
    assert h1["X-Chatwoot-Delivery"] != h2["X-Chatwoot-Delivery"]
    assert "X-Chatwoot-Signature" not in h1 and "X-Chatwoot-Timestamp" not in h1
    typing = json.loads(b1)
    assert typing["event"] == "conversation_typing_on" and "account" not in typing
    assert typing["conversation"]["account"]["id"] == 1
    assert isinstance(parse_webhook(typing), TypingEvent)


async def test_incoming_message_reopens_and_echoes(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, webhook_urls=[receiver.url])
    client = client_for(http, fake)
    with trio.fail_after(10):
        cid = await new_conversation(client)
        await fake.set_status(cid, "resolved")
        receiver.received.clear()
        await client.create_message(cid, content="back again", source_id="d-9")
        await fake.wait_webhooks_delivered()
    got = events(receiver)
    assert [e["event"] for e in got] == [
        "conversation_status_changed",
        "conversation_updated",
        "message_created",
    ]
    assert got[0]["status"] == "open" and got[0]["changed_attributes"] is None
    assert got[1]["changed_attributes"][0] == {
        "status": {"previous_value": "resolved", "current_value": "open"}
    }
    assert got[2]["message_type"] == "incoming" and got[2]["source_id"] == "d-9"
    parsed = [parse_webhook(e) for e in got]
    assert isinstance(parsed[1], ConversationEvent) and parsed[1].previous_status == "resolved"
    assert isinstance(parsed[2], MessageEvent) and parsed[2].contact_identifier == "123"
    assert fake.conversations[cid]["status"] == "open"


async def test_resolve_sends_csat_once(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, webhook_urls=[receiver.url], inbox={"csat_survey_enabled": True})
    with trio.fail_after(10):
        cid = await new_conversation(client_for(http, fake))
        await fake.set_status(cid, "resolved")
        await fake.set_status(cid, "open")
        await fake.set_status(cid, "resolved")
    csat = [e for e in events(receiver) if e.get("content_type") == "input_csat"]
    assert len(csat) == 1
    uuid_ = fake.conversations[cid]["uuid"]
    assert csat[0]["content"] == (
        f"Please rate this conversation, {fake.base_url}/survey/responses/{uuid_}"
    )
    assert csat[0]["message_type"] == "template" and csat[0]["sender"] is None
    activity = [m for m in fake.messages_in(cid) if m["message_type"] == 2]
    assert len(activity) == 3  # activity messages are stored but never sent


async def test_out_of_office_then_greeting_rules(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(
        nursery,
        webhook_urls=[receiver.url],
        inbox={
            "greeting_enabled": True,
            "greeting_message": "Welcome!",
            "working_hours_enabled": True,
            "out_of_office_message": "We are closed.",
        },
    )
    fake.clock = lambda: SUNDAY_NOON  # Sunday is closed by default
    client = client_for(http, fake)
    with trio.fail_after(10):
        closed_cid = await new_conversation(client, "1")
        await client.create_message(closed_cid, content="anyone?")
        await client.create_message(closed_cid, content="hello?")
        fake.clock = lambda: SUNDAY_NOON + 86400  # Monday 12:00, open
        open_cid = await new_conversation(client, "2")
        await client.create_message(open_cid, content="hi")
        await client.create_message(open_cid, content="hi again")
        await fake.wait_webhooks_delivered()
    templates = [
        (m["conversation_id"], m["content"])
        for m in fake.messages.values()
        if m["message_type"] == 3
    ]
    assert templates == [(closed_cid, "We are closed."), (open_cid, "Welcome!")]
    sent = [
        (e["conversation"]["id"], e["content"])
        for e in events(receiver)
        if e.get("message_type") == "template"
    ]
    assert sent == templates


async def test_failed_delivery_marks_the_message_failed(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, webhook_urls=[receiver.url])
    with trio.fail_after(10):
        cid = await new_conversation(client_for(http, fake))
        receiver.status = 500
        reply = await fake.agent_reply(cid, "will fail")
        await fake.wait_webhooks_delivered()
    stored = fake.messages[reply["id"]]
    assert stored["status"] == "failed"
    assert stored["content_attributes"]["external_error"] == "500 Internal Server Error"
    attempts = [
        d
        for d in fake.webhook_deliveries
        if json.loads(d.body)["event"].startswith("message_")
        and json.loads(d.body)["id"] == reply["id"]
    ]
    # message_created failed, then one message_updated (which fails identically: no loop)
    assert [json.loads(d.body)["event"] for d in attempts] == ["message_created", "message_updated"]
    assert all(d.status == 500 for d in attempts)


async def test_lost_webhook_leaves_state_for_reconciliation(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, webhook_urls=[receiver.url])
    client = client_for(http, fake)
    with trio.fail_after(10):
        cid = await new_conversation(client)
        await fake.wait_webhooks_delivered()
        before = len(receiver.received)
        reply = await fake.agent_reply(cid, "lost", deliver=False)
        listed = await client.list_messages(cid, after=0)
    assert len(receiver.received) == before
    assert fake.lost_webhooks[0]["id"] == reply["id"]
    assert [m["id"] for m in listed if m["message_type"] == 1] == [reply["id"]]


async def test_delete_and_status_updates_fire_message_updated(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, webhook_urls=[receiver.url])
    client = client_for(http, fake)
    with trio.fail_after(10):
        cid = await new_conversation(client)
        reply = await fake.agent_reply(cid, "hi", attachments=[("a.png", "image/png", b"PNG")])
        await client.update_message_status(cid, reply["id"], "read")
        await client.update_message_status(cid, reply["id"], "delivered")  # read -> delivered
        await client.update_message_status(cid, reply["id"], "bogus")
        await fake.wait_webhooks_delivered()
        receiver.received.clear()
        await fake.delete_message(cid, reply["id"])
    updates = [e for e in fake.delivered_events("message_updated") if e["id"] == reply["id"]]
    assert len(updates) == 2  # one real status change, one delete
    assert fake.messages[reply["id"]]["status"] == "read"
    [deleted] = events(receiver)
    assert deleted["content_attributes"] == {"deleted": True}
    assert deleted["content"] == "This message was deleted" and "attachments" not in deleted
    assert fake.attachment_blobs == {}


async def test_status_updates_can_go_unannounced(
    nursery: trio.Nursery, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    """``echo_receipts = False`` (the benchmark's reply scenario of issue 13's shape): the
    status changes, no webhook says so; a delete still does."""
    fake = await start(nursery, webhook_urls=[receiver.url])
    fake.echo_receipts = False
    client = client_for(http, fake)
    with trio.fail_after(10):
        cid = await new_conversation(client)
        reply = await fake.agent_reply(cid, "hi")
        await client.update_message_status(cid, reply["id"], "delivered")
        await fake.delete_message(cid, reply["id"])
        await fake.wait_webhooks_delivered()
    assert fake.messages[reply["id"]]["status"] == "delivered"
    updates = [e for e in fake.delivered_events("message_updated") if e["id"] == reply["id"]]
    assert [u["content_attributes"] for u in updates] == [{"deleted": True}]


async def test_attachment_urls_redirect_to_the_bytes(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery)
    with trio.fail_after(10):
        cid = await new_conversation(client_for(http, fake))
        reply = await fake.agent_reply(cid, "", attachments=[("cat.png", "image/png", b"\x89PNG")])
        url = reply["attachments"][0]["data_url"]
        response = await http.get(url, follow_redirects=True)
    assert response.content == b"\x89PNG" and response.headers["content-type"] == "image/png"
    assert len(response.history) == 1 and url.endswith("/cat.png")


async def test_lock_to_single_conversation(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    locked = await start(nursery, inbox={"lock_to_single_conversation": True})
    unlocked = await start(nursery)
    ids = {}
    with trio.fail_after(10):
        for name, fake in (("locked", locked), ("unlocked", unlocked)):
            client = client_for(http, fake)
            contact = await client.create_contact(name="a", identifier="1")
            assert contact.source_id is not None
            first = await client.create_conversation(
                contact_id=contact.id, source_id=contact.source_id
            )
            await fake.set_status(first["id"], "resolved")
            second = await client.create_conversation(
                contact_id=contact.id, source_id=contact.source_id
            )
            ids[name] = (first["id"], second["id"])
    assert ids == {"locked": (1, 1), "unlocked": (1, 2)}
    assert [c["id"] for c in unlocked.conversation_for("1")] == [1, 2]


async def test_message_index_windows(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    fake = await start(nursery)
    client = client_for(http, fake)
    with trio.fail_after(20):
        cid = await new_conversation(client)
        for n in range(24):
            await client.create_message(cid, content=f"m{n}")
        await fake.agent_reply(cid, "note", private=True)
        ids = [m["id"] for m in fake.messages_in(cid)]
        latest = await client.list_messages(cid)
        before = await client.list_messages(cid, before=ids[10])
        after = await client.list_messages(cid, after=ids[0])
        window = await client.list_messages(cid, after=ids[2], before=ids[5])
        response = await http.get(
            f"{fake.base_url}/api/v1/accounts/1/conversations/{cid}/messages",
            params={"filter_internal_messages": "true"},
            headers={"api_access_token": fake.api_token},
        )
    assert [m["id"] for m in latest] == ids[-20:]
    assert [m["id"] for m in before] == ids[:10]
    assert [m["id"] for m in after] == ids[1:]
    assert [m["id"] for m in window] == ids[2:5]  # lower bound inclusive
    assert all(not m["private"] for m in response.json()["payload"])


async def test_failures_outage_health_and_accounts(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, version="4.15.1")
    base = fake.base_url
    token = {"api_access_token": fake.api_token}
    fake.fail_next("get", r"/profile$", 502, times=2, body="Bad gateway")
    with trio.fail_after(10):
        statuses = [(await http.get(f"{base}/api/v1/profile", headers=token)).status_code]
        statuses.append((await http.get(f"{base}/api/v1/profile", headers=token)).status_code)
        statuses.append((await http.get(f"{base}/api/v1/profile", headers=token)).status_code)
        other = await http.get(f"{base}/api/v1/accounts/2/conversations/1", headers=token)
        health = await http.get(f"{base}/health")
        version = await http.get(f"{base}/api")
        fake.down = True
        down = await http.get(f"{base}/health")
    assert statuses == [502, 502, 200]
    assert other.status_code == 401
    assert health.json() == {"status": "woot"}
    assert version.json()["version"] == "4.15.1"
    assert down.status_code == 503
    assert [r.status for r in fake.requests] == [502, 502, 200, 401, 200, 200, 503]


async def test_spec_violations_are_recorded(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    fake = await start(nursery)
    with trio.fail_after(10):
        await http.post(
            f"{fake.base_url}/api/v1/accounts/1/contacts",
            json={"name": "no inbox"},
            headers={"api_access_token": fake.api_token},
        )
    assert any("inbox_id" in v for v in fake.violations)
