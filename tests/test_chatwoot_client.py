"""ChatwootClient against FakeChatwoot over a real socket on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from diswoot.chatwoot.client import (
    Attachment,
    ChatwootClient,
    ChatwootCsatLocked,
    ChatwootError,
    ChatwootNotFound,
    ChatwootTokenRejected,
    ChatwootUnavailable,
    ChatwootUnprocessable,
)
from diswoot.testing.fake_chatwoot import FakeChatwoot

TOKEN = "test-chatwoot-token"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeChatwoot:
    fake = FakeChatwoot(
        inbox={"csat_survey_enabled": True, "lock_to_single_conversation": False},
    )
    await fake.serve(nursery)
    return fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_client(
    http: httpx.AsyncClient, base_url: str, *, token: str = TOKEN, timeout: float = 5.0
) -> ChatwootClient:
    return ChatwootClient(
        http, base_url=base_url, account_id=1, inbox_id=7, api_token=token, timeout=timeout
    )


@pytest.fixture
def client(http: httpx.AsyncClient, fake: FakeChatwoot) -> ChatwootClient:
    return make_client(http, fake.base_url)


async def open_conversation(client: ChatwootClient, identifier: str = "123") -> dict[str, Any]:
    contact = await client.create_contact(name="alice", identifier=identifier)
    assert contact.source_id is not None
    return await client.create_conversation(contact_id=contact.id, source_id=contact.source_id)


async def test_create_contact_sends_token_and_parses_payload(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    with trio.fail_after(10):
        contact = await client.create_contact(
            name="alice",
            identifier="123456789",
            email="Alice@Example.COM",
            custom_attributes={"discord_id": "123456789"},
        )
    assert contact.raw["identifier"] == "123456789"
    assert contact.raw["email"] == "alice@example.com"
    assert contact.source_id == fake.contact_inboxes[1]["source_id"]
    assert fake.requests[0].headers["api_access_token"] == TOKEN
    assert fake.requests[0].json["inbox_id"] == 7
    assert client.calls["POST /contacts"] == 1
    assert fake.violations == []


async def test_create_contact_without_inbox_then_contact_inbox(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    with trio.fail_after(10):
        contact = await client.create_contact(name="bob", identifier="42", with_inbox=False)
        assert contact.source_id is None
        source_id = await client.create_contact_inbox(contact.id, "discord-42")
        again = await client.create_contact_inbox(contact.id, "discord-42")
    assert source_id == again == "discord-42"
    assert [ci["source_id"] for ci in fake.contact_inboxes.values()] == ["discord-42"]


async def test_duplicate_identifier_is_unprocessable(client: ChatwootClient) -> None:
    with trio.fail_after(10):
        await client.create_contact(name="alice", identifier="123")
        with pytest.raises(ChatwootUnprocessable) as caught:
            await client.create_contact(name="alice again", identifier="123")
    assert caught.value.status == 422
    assert caught.value.body == {
        "message": "Identifier has already been taken",
        "attributes": ["identifier"],
    }
    assert "Identifier has already been taken" in str(caught.value)


async def test_find_contact_filters_substring_matches_and_pages(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    with trio.fail_after(20):
        for n in range(20):
            await client.create_contact(name=f"user{n}", identifier=f"5551{n:02d}")
        await client.create_contact(name="target", identifier="5551")
        found = await client.find_contact_by_identifier("5551")
        missing = await client.find_contact_by_identifier("555")
    assert found is not None and found["name"] == "target"
    assert missing is None
    # "5551" matches 21 contacts as a substring: the exact one is on page 2 of 15.
    pages = [r.query.get("page") for r in fake.requests if r.path.endswith("/search")]
    assert pages == ["1", "2", "1", "2"]
    assert client.calls["GET /contacts/search"] == 4


async def test_update_contact_merges_custom_attributes(client: ChatwootClient) -> None:
    with trio.fail_after(10):
        contact = await client.create_contact(
            name="alice", identifier="1", custom_attributes={"a": 1}
        )
        updated = await client.update_contact(contact.id, name="Alice", custom_attributes={"b": 2})
    assert updated["name"] == "Alice"
    assert updated["custom_attributes"] == {"a": 1, "b": 2}


async def test_conversation_lifecycle(client: ChatwootClient, fake: FakeChatwoot) -> None:
    with trio.fail_after(10):
        conversation = await open_conversation(client)
        cid = conversation["id"]
        shown = await client.get_conversation(cid)
        listed = await client.list_contact_conversations(conversation["meta"]["sender"]["id"])
        status = await client.toggle_status(cid, "snoozed", snoozed_until=1_900_000_000)
        recent = await client.list_conversations(updated_within=3600)
        resolved_list = await client.list_conversations(status="resolved")
    assert shown["uuid"] == fake.conversations[cid]["uuid"]
    assert {"status", "last_activity_at"} <= shown.keys()
    assert [c["id"] for c in listed] == [cid]
    assert status == "snoozed"
    assert fake.conversations[cid]["snoozed_until"] == 1_900_000_000
    assert [c["id"] for c in recent] == [cid]
    assert resolved_list == []
    query = next(
        r.query
        for r in fake.requests
        if r.method == "GET" and r.path == "/api/v1/accounts/1/conversations"
    )
    assert query["inbox_id"] == "7" and query["status"] == "all"
    assert fake.violations == []


async def test_messages_post_list_and_status(client: ChatwootClient, fake: FakeChatwoot) -> None:
    with trio.fail_after(10):
        cid = (await open_conversation(client))["id"]
        first = await client.create_message(cid, content="hello", source_id="d-1")
        second = await client.create_message(
            cid, content="note", message_type="outgoing", private=True
        )
        after = await client.list_messages(cid, after=first["id"])
        before = await client.list_messages(cid, before=second["id"])
        failed = await client.update_message_status(
            cid, second["id"], "failed", external_error="Discord: 50007"
        )
        delivered = await client.update_message_status(cid, second["id"], "delivered")
    assert first["message_type"] == 0 and first["source_id"] == "d-1"
    assert second["message_type"] == 1 and second["private"] is True
    assert [m["id"] for m in after] == [second["id"]]
    assert [m["id"] for m in before] == [first["id"]]
    assert failed["status"] == "failed"
    assert failed["content_attributes"]["external_error"] == "Discord: 50007"
    assert delivered["status"] == "delivered"
    assert "external_error" not in delivered["content_attributes"]
    assert fake.violations == []


async def test_attachments_upload_as_multipart_with_the_same_bytes(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(PNG), 1000):
            yield PNG[start : start + 1000]

    with trio.fail_after(10):
        cid = (await open_conversation(client))["id"]
        message = await client.create_message(
            cid,
            content="look",
            source_id="d-2",
            content_attributes={"in_reply_to_external_id": "d-0"},
            attachments=[
                Attachment("cat.png", "image/png", chunks()),
                Attachment('we"ird.txt', "text/plain", b"plain text"),
            ],
        )
    upload = fake.requests[-1]
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert [(f.field, f.filename, f.content_type, f.data) for f in upload.files] == [
        ("attachments[]", "cat.png", "image/png", PNG),
        ("attachments[]", 'we"ird.txt', "text/plain", b"plain text"),
    ]
    assert upload.form["message_type"] == "incoming" and upload.form["private"] == "false"
    assert [a["file_type"] for a in message["attachments"]] == ["image", "file"]
    stored = fake.messages[message["id"]]
    assert stored["content_attributes"] == {"in_reply_to_external_id": "d-0"}
    assert fake.attachment_blobs[message["attachments"][0]["id"]] == PNG
    assert fake.violations == []


async def test_each_upload_names_its_own_boundary_and_json_stays_json(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    """Request headers are prepared once per kind; a multipart body's type (its boundary)
    is never reused for a later request."""
    with trio.fail_after(10):
        cid = (await open_conversation(client))["id"]
        for name in ("a.txt", "b.txt"):
            await client.create_message(
                cid, content=name, attachments=[Attachment(name, "text/plain", b"x")]
            )
        await client.create_message(cid, content="plain")
    first, second, plain = fake.requests[-3:]
    assert first.headers["content-type"] != second.headers["content-type"]
    assert [f.filename for f in first.files + second.files] == ["a.txt", "b.txt"]
    assert plain.headers["content-type"] == "application/json"
    assert fake.violations == []


async def test_inbox_profile_and_probe(
    client: ChatwootClient, fake: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    fake.inbox.update(timezone="Europe/Berlin", working_hours_enabled=True)
    with trio.fail_after(10):
        inbox = await client.get_inbox()
        profile = await client.get_profile()
        up = await client.probe()
        fake.down = True
        down = await client.probe()
        nobody = await make_client(http, f"http://127.0.0.1:{free_port()}").probe()
    assert inbox.id == 7 and inbox.timezone == "Europe/Berlin"
    assert inbox.working_hours_enabled and len(inbox.working_hours) == 7
    assert inbox.csat_survey_enabled and inbox.channel_type == "Channel::Api"
    assert inbox.inbox_identifier == fake.inbox["inbox_identifier"]
    assert profile["id"] == fake.user["id"]
    assert (up, down, nobody) == (True, False, False)
    assert client.calls["GET /health"] == 2 and client.calls["GET /api"] == 1


async def test_typing_as_contact_uses_the_public_api(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    with trio.fail_after(10):
        conversation = await open_conversation(client)
        source_id = fake.contact_inboxes[1]["source_id"]
        ident = fake.inbox["inbox_identifier"]
        await client.toggle_typing_as_contact(ident, source_id, conversation["id"], True)
        with pytest.raises(ChatwootNotFound):
            await client.toggle_typing_as_contact("wrong", source_id, conversation["id"], False)
    request = fake.requests[-2]
    assert request.path.endswith(f"/conversations/{conversation['id']}/toggle_typing")
    assert request.json == {"typing_status": "on"}
    assert "api_access_token" not in request.headers
    assert fake.violations == []


async def test_csat_get_submit_and_lock(client: ChatwootClient, fake: FakeChatwoot) -> None:
    with trio.fail_after(10):
        cid = (await open_conversation(client))["id"]
        uuid = (await client.get_conversation(cid))["uuid"]
        with pytest.raises(ChatwootNotFound):
            await client.get_csat(uuid)  # no survey message before resolving
        await client.toggle_status(cid, "resolved")
        survey = await client.get_csat(uuid)
        answered = await client.submit_csat(uuid, 5, "Great")
        after = await client.get_csat(uuid)
        await client.submit_csat(uuid, 9, None)  # out of range: 200, but no report row
        unchanged = await client.get_csat(uuid)
        fake.age_csat(cid, days=15)
        with pytest.raises(ChatwootCsatLocked) as locked:
            await client.submit_csat(uuid, 4, None)
    assert survey["conversation_id"] == fake.conversations[cid]["db_id"]
    assert survey["csat_survey_response"] is None
    assert answered["csat_survey_response"] is None  # written asynchronously by Chatwoot
    assert after["csat_survey_response"]["rating"] == 5
    assert after["csat_survey_response"]["feedback_message"] == "Great"
    assert unchanged["csat_survey_response"]["rating"] == 5
    stored = fake.messages[survey["id"]]["content_attributes"]["submitted_values"]
    assert stored == {"csat_survey_response": {"rating": 9}}
    assert isinstance(locked.value, ChatwootUnprocessable) and locked.value.status == 422


async def test_a_token_chatwoot_does_not_know_is_the_tokens_fault(
    http: httpx.AsyncClient, fake: FakeChatwoot
) -> None:
    """401 "Invalid Access Token": transient for the job (it waits for a valid token), and
    the client's ``token_rejected`` tells the daemon to stop with 78."""
    client = make_client(http, fake.base_url, token="wrong")
    with trio.fail_after(10), pytest.raises(ChatwootTokenRejected) as caught:
        await client.get_inbox()
    assert caught.value.status == 401 and caught.value.transient
    assert client.token_rejected.is_set()
    assert "CHATWOOT_API_TOKEN is not a valid access token" in str(caught.value)
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize(
    "error", ["You are not authorized to do this action", "Access to this endpoint is not "
              "authorized for bots"]
)
async def test_a_401_about_one_requests_access_is_that_requests(
    client: ChatwootClient, fake: FakeChatwoot, error: str
) -> None:
    """Chatwoot's other 401s (Pundit, agent-bot tokens) are a permanent failure of the request
    with the inbox-access hint; the token itself is not judged."""
    fake.fail_next("POST", r"/contacts$", 401, body={"error": error})
    with trio.fail_after(10), pytest.raises(ChatwootError) as caught:
        await client.create_contact(name="alice", identifier="discord:1")
    assert type(caught.value) is ChatwootError and not caught.value.transient
    assert "lacks access to inbox 7" in str(caught.value)
    assert not client.token_rejected.is_set()


async def test_not_found(client: ChatwootClient) -> None:
    with trio.fail_after(10), pytest.raises(ChatwootNotFound) as caught:
        await client.get_conversation(999)
    assert caught.value.status == 404
    assert "not found" in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_retryable_statuses_are_unavailable(
    client: ChatwootClient, fake: FakeChatwoot, status: int
) -> None:
    fake.fail_next("GET", r"/conversations/\d+$", status)
    with trio.fail_after(10):
        with pytest.raises(ChatwootUnavailable) as caught:
            await client.get_conversation(1)
        with pytest.raises(ChatwootNotFound):
            await client.get_conversation(1)  # the injected failure was used up
    assert caught.value.status == status
    assert str(status) in str(caught.value)


async def test_a_429_is_the_global_limit_nothing_goes_until_the_next_window(
    client: ChatwootClient, fake: FakeChatwoot
) -> None:
    client.throttle.period, client.throttle.margin = 0.5, 0.01
    fake.fail_next("GET", r"/conversations/\d+$", 429)
    with trio.fail_after(10):
        with pytest.raises(ChatwootUnavailable) as caught:
            await client.get_conversation(1)
        refused = trio.current_time()
        assert caught.value.status == 429 and "429" in str(caught.value)
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 0.51
        with pytest.raises(ChatwootNotFound):  # sent only once the window is over
            await client.get_conversation(1)
        assert trio.current_time() - refused >= caught.value.retry_after - 0.02


async def test_search_rate_limit_is_unavailable(client: ChatwootClient, fake: FakeChatwoot) -> None:
    fake.clock = lambda: 1_781_690_400.0
    with trio.fail_after(20):
        for _ in range(100):
            await client.find_contact_by_identifier("nobody")
        with pytest.raises(ChatwootUnavailable, match="rate-limited") as caught:
            await client.find_contact_by_identifier("nobody")
        await client.get_inbox()  # the search throttle does not hold other requests
        fake.clock = lambda: 1_781_690_460.0  # the next fixed 60 s window
        assert await client.find_contact_by_identifier("nobody") is None
    assert caught.value.status == 429
    throttled = fake.requests[100]
    assert throttled.status == 429


async def test_outage_and_network_errors_are_unavailable(
    client: ChatwootClient, fake: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    fake.down = True
    with trio.fail_after(10):
        with pytest.raises(ChatwootUnavailable, match="503"):
            await client.get_profile()
        with pytest.raises(ChatwootUnavailable, match="network error"):
            await make_client(http, f"http://127.0.0.1:{free_port()}").get_profile()


async def test_timeout_is_unavailable(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    slow = FakeChatwoot(latency=1.0)
    await slow.serve(nursery)
    client = make_client(http, slow.base_url, timeout=0.05)
    with trio.fail_after(10), pytest.raises(ChatwootUnavailable, match="timed out"):
        await client.get_profile()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
