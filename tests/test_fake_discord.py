"""FakeDiscord over real sockets, driven by the production DiscordRest."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from diswoot.rest.client import DiscordRest, UploadFile
from diswoot.rest.errors import DiscordHTTPError
from diswoot.testing.fake_discord import FakeDiscord

ALICE = "80351110224678912"


class RecordingGateway:
    """Stands in for FakeGateway where a test only checks what FakeDiscord dispatches."""

    def __init__(self) -> None:
        self.url = "ws://127.0.0.1:1"
        self.session_start_limit: dict[str, Any] = {
            "total": 1000,
            "remaining": 999,
            "reset_after": 14_400_000,
            "max_concurrency": 1,
        }
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def serve(self, nursery: trio.Nursery) -> str:
        return self.url

    def dispatch(self, event_name: str, data: dict[str, Any]) -> None:
        self.events.append((event_name, data))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def start(nursery: trio.Nursery, **kwargs: Any) -> FakeDiscord:
    fake = FakeDiscord(gateway=kwargs.pop("gateway", None) or RecordingGateway(), **kwargs)
    await fake.serve(nursery)
    fake.add_user(ALICE, "alice", global_name="Alice")
    return fake


def client(fake: FakeDiscord, http: httpx.AsyncClient, token: str = "test-token") -> DiscordRest:
    return DiscordRest(http, base_url=fake.api_base_url, token=token)


async def test_fifty_concurrent_senders_never_hit_an_exhausted_bucket(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, enforce_limits=True, route_limit=10, route_window=0.25)
    rest = client(fake, http)
    with trio.fail_after(20):
        channel = await rest.create_dm(ALICE)
        async with trio.open_nursery() as senders:
            for n in range(50):
                senders.start_soon(partial(rest.send_message, channel, content=f"m{n}"))
    assert fake.bucket_violations == 0
    assert fake.global_violations == 0
    assert fake.responses_429 == 0
    assert rest.stats.responses_429 == 0
    assert rest.stats.rate_limit_waits > 0
    assert sorted(m["content"] for m in fake.dm_messages(ALICE)) == sorted(
        f"m{n}" for n in range(50)
    )
    assert fake.violations == []
    assert fake.response_violations == []


async def test_global_limit_across_channels(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    fake = await start(nursery, enforce_limits=True)
    channels = []
    for n in range(60):
        user_id = str(90000000000000000 + n)
        fake.add_user(user_id, f"user{n}")
        channels.append(fake.user_sends(user_id, "hi")["channel_id"])
    rest = client(fake, http)
    with trio.fail_after(20):
        async with trio.open_nursery() as senders:
            for channel in channels:
                senders.start_soon(partial(rest.send_message, channel, content="hello"))
    assert fake.global_violations == 0
    assert fake.responses_429 == 0


async def test_server_answers_429_when_a_client_ignores_limits(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery, enforce_limits=True, route_limit=2, route_window=30.0)
    headers = {"Authorization": "Bot test-token"}
    url = f"{fake.api_base_url}/users/{ALICE}"
    with trio.fail_after(10):
        responses = [await http.get(url, headers=headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["x-ratelimit-remaining"] == "1"
    assert responses[0].headers["x-ratelimit-bucket"] == responses[1].headers["x-ratelimit-bucket"]
    body = responses[2].json()
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 30
    assert responses[2].headers["x-ratelimit-scope"] == "user"
    assert fake.bucket_violations == 1
    assert fake.responses_429 == 1


async def test_auth_and_identity_routes(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    gateway = RecordingGateway()
    fake = await start(nursery, gateway=gateway)
    with trio.fail_after(10):
        with pytest.raises(DiscordHTTPError) as denied:
            await client(fake, http, token="wrong").get_current_user()
        rest = client(fake, http)
        assert (await rest.get_gateway_bot())["url"] == gateway.url
        assert (await rest.get_current_user())["id"] == fake.bot_user_id
        assert (await rest.get_current_application())["id"] == fake.application_id
        assert (await rest.get_user(ALICE))["global_name"] == "Alice"
        first, second = (
            await rest.create_dm(ALICE),
            await DiscordRest(http, base_url=fake.api_base_url, token="test-token").create_dm(
                ALICE
            ),
        )
    assert (denied.value.status, denied.value.code, denied.value.message) == (
        401,
        0,
        "401: Unauthorized",
    )
    assert first == second
    assert fake.channels[first]["type"] == 1
    assert fake.response_violations == []


async def test_send_echo_nonce_and_errors(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    gateway = RecordingGateway()
    fake = await start(nursery, gateway=gateway, route_window=0.2)
    fake.add_user("3", "closed", accepts_dms=False)
    rest = client(fake, http)
    with trio.fail_after(10):
        channel = await rest.create_dm(ALICE)
        sent = await rest.send_message(channel, content="hello", nonce="n-1")
        again = await rest.send_message(channel, content="hello", nonce="n-1")
        closed = await rest.create_dm("3")
        with pytest.raises(DiscordHTTPError) as cannot_dm:
            await rest.send_message(closed, content="hi")
        with pytest.raises(DiscordHTTPError) as empty:
            await rest.send_message(channel, content="")
        with pytest.raises(DiscordHTTPError) as too_long:
            await rest.send_message(channel, content="x" * 2001)
        with pytest.raises(DiscordHTTPError) as bad_embed:
            await rest.send_message(channel, embeds=[{"title": "t" * 257}])
        with pytest.raises(DiscordHTTPError) as too_big:
            big = UploadFile("big.bin", "application/octet-stream", b"\0" * (10 * 1024 * 1024 + 1))
            await rest.send_message(channel, files=[big])
    assert again["id"] == sent["id"]
    assert [m["id"] for m in fake.dm_messages(ALICE)] == [sent["id"]]
    echoes = [d for e, d in gateway.events if e == "MESSAGE_CREATE"]
    assert echoes[0]["id"] == sent["id"]
    assert echoes[0]["channel_type"] == 1
    assert echoes[0]["author"]["id"] == fake.bot_user_id
    assert (cannot_dm.value.status, cannot_dm.value.code, cannot_dm.value.permanent) == (
        403,
        50007,
        True,
    )
    assert empty.value.code == 50006
    assert too_long.value.code == 50035
    assert bad_embed.value.code == 50035
    assert (too_big.value.status, too_big.value.code) == (413, 40005)


async def test_multipart_is_stored_and_served(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery)
    rest = client(fake, http)
    with trio.fail_after(10):
        channel = await rest.create_dm(ALICE)
        files = [UploadFile("receipt.png", "image/png", b"\x89PNG-data", description="receipt")]
        message = await rest.send_message(channel, content="see file", files=files)
        [attachment] = message["attachments"]
        download = await http.get(attachment["url"])
        tampered = await http.get(attachment["url"].replace("hm=", "hm=0"))
    recorded = fake.requests[-1]
    assert recorded.json["attachments"] == [
        {"id": "0", "filename": "receipt.png", "description": "receipt"}
    ]
    assert [(f.name, f.filename, f.content_type, f.data) for f in recorded.files] == [
        ("files[0]", "receipt.png", "image/png", b"\x89PNG-data")
    ]
    assert attachment["description"] == "receipt"
    assert attachment["size"] == len(b"\x89PNG-data")
    assert "?ex=" in attachment["url"]
    assert "&hm=" in attachment["url"]
    assert (download.status_code, download.content) == (200, b"\x89PNG-data")
    assert download.headers["content-type"] == "image/png"
    assert tampered.status_code == 403
    assert fake.violations == []


async def test_user_attachment_bytes_are_served(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    gateway = RecordingGateway()
    fake = await start(nursery, gateway=gateway)
    message = fake.user_sends(
        ALICE, "my receipt", attachments=[("r.pdf", "application/pdf", b"%PDF")]
    )
    with trio.fail_after(10):
        download = await http.get(message["attachments"][0]["url"])
    assert download.content == b"%PDF"
    event, data = gateway.events[-1]
    assert event == "MESSAGE_CREATE"
    assert data["channel_type"] == 1
    assert data["author"]["id"] == ALICE


async def test_reactions_typing_edit_delete(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    fake = await start(nursery)
    rest = client(fake, http)
    with trio.fail_after(10):
        channel = await rest.create_dm(ALICE)
        message = await rest.send_message(channel, content="v1")
        await rest.add_reaction(channel, message["id"], "👍")
        await rest.trigger_typing(channel)
        edited = await rest.edit_message(channel, message["id"], content="v2")
        bad = await http.put(
            f"{fake.api_base_url}/channels/{channel}/messages/{message['id']}/reactions/%25F0%259F%2591%258D/@me",
            headers={"Authorization": "Bot test-token"},
        )
        await rest.delete_message(channel, message["id"])
        with pytest.raises(DiscordHTTPError) as gone:
            await rest.edit_message(channel, message["id"], content="v3")
    assert fake.reactions == [(channel, message["id"], "👍")]
    assert fake.typing == [channel]
    assert edited["content"] == "v2"
    assert edited["edited_timestamp"] is not None
    assert (bad.status_code, bad.json()["code"]) == (400, 10014)
    assert gone.value.code == 10008
    assert fake.dm_messages(ALICE) == []


async def test_list_messages_paging_over_250(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery)
    sent = [fake.user_sends(ALICE, f"n{n}")["id"] for n in range(250)]
    channel = fake.dm_messages(ALICE) or fake.user_sends(ALICE, "last")
    channel_id = channel["channel_id"] if isinstance(channel, dict) else channel[0]["channel_id"]
    sent.append(channel["id"] if isinstance(channel, dict) else channel[-1]["id"])
    rest = client(fake, http)
    seen: list[str] = []
    after = "0"
    with trio.fail_after(10):
        while True:
            page = await rest.list_messages(channel_id, after=after, limit=100)
            ids = [int(m["id"]) for m in page]
            assert ids == sorted(ids, reverse=True)  # newest first, even with after
            seen += [m["id"] for m in reversed(page)]
            if len(page) < 100:
                break
            after = page[0]["id"]
        newest = await rest.list_messages(channel_id, limit=5)
    assert seen == sent
    assert [m["id"] for m in newest] == sent[::-1][:5]
    assert fake.violations == []


async def test_spec_validator_catches_a_bad_body(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    fake = await start(nursery)
    with trio.fail_after(10):
        response = await http.post(
            f"{fake.api_base_url}/users/@me/channels",
            headers={"Authorization": "Bot test-token"},
            json={"recipient_id": 12345},
        )
    assert (response.status_code, response.json()["code"]) == (400, 50035)
    assert any("recipient_id" in v for v in fake.violations)


async def test_fail_next_injects_failures(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    fake = await start(nursery)
    fake.fail_next("GET", r"^/users/", 503, times=2)
    fake.fail_next("GET", r"^/applications/@me$", 404, code=10002)
    rest = client(fake, http)
    with trio.fail_after(60):
        assert (await rest.get_user(ALICE))["id"] == ALICE
        with pytest.raises(DiscordHTTPError) as unknown:
            await rest.get_current_application()
    assert [r.status for r in fake.requests] == [503, 503, 200, 404]
    assert unknown.value.code == 10002


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock()  # advances only on jump(): sockets keep real time


async def test_interaction_flow_and_deadlines(
    nursery: trio.Nursery, http: httpx.AsyncClient, mock_clock: trio.testing.MockClock
) -> None:
    gateway = RecordingGateway()
    fake = await start(nursery, gateway=gateway)
    rest = client(fake, http)
    with trio.fail_after(10):
        commands = await rest.bulk_overwrite_global_commands(
            fake.application_id,
            [{"name": "ticket", "type": 1, "description": "Open a ticket", "contexts": [1]}],
        )
        interaction = fake.slash_command(ALICE, "ticket", {"subject": "late order"})
        await rest.create_interaction_response(interaction["id"], interaction["token"], {"type": 5})
        with pytest.raises(DiscordHTTPError) as twice:
            await rest.create_interaction_response(
                interaction["id"], interaction["token"], {"type": 5}
            )
        edited = await rest.edit_original_response(
            fake.application_id, interaction["token"], {"content": "Ticket #1 opened"}
        )
        followup = await rest.create_followup(
            fake.application_id, interaction["token"], {"content": "extra", "flags": 64}
        )
        late = fake.click_button(ALICE, edited, "close_ticket:1")
        mock_clock.jump(3.5)
        with pytest.raises(DiscordHTTPError) as expired:
            await rest.create_interaction_response(late["id"], late["token"], {"type": 6})
        modal = fake.submit_modal(ALICE, "ticket_modal", {"subject": "hi"})
    assert gateway.events[-1] == ("INTERACTION_CREATE", modal)
    assert modal["data"]["components"][0]["component"]["custom_id"] == "subject"
    assert interaction["data"]["id"] == commands[0]["id"]
    assert interaction["data"]["options"] == [{"name": "subject", "type": 3, "value": "late order"}]
    assert twice.value.code == 40060
    assert expired.value.code == 10062
    assert edited["content"] == "Ticket #1 opened"
    assert followup["flags"] == 64
    assert fake.interaction_responses[interaction["id"]][0] == {"type": 5}
    assert [m["content"] for m in fake.dm_messages(ALICE)] == ["Ticket #1 opened", "extra"]
    assert fake.violations == []


async def test_http_interactions_are_signed(nursery: trio.Nursery, http: httpx.AsyncClient) -> None:
    nacl_signing = pytest.importorskip("nacl.signing")
    signer = nacl_signing.SigningKey.generate()
    fake = await start(nursery, public_key_signer=signer)
    received: list[tuple[bytes, dict[str, str]]] = []

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        received.append((body, {k.decode(): v.decode() for k, v in scope["headers"]}))
        verify = signer.verify_key
        headers = received[-1][1]
        try:
            verify.verify(
                headers["x-signature-timestamp"].encode() + body,
                bytes.fromhex(headers["x-signature-ed25519"]),
            )
            status = 200
        except Exception:
            status = 401
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    with trio.fail_after(10):
        [url] = await nursery.start(
            partial(serve, endpoint, config, shutdown_trigger=trio.sleep_forever)
        )
        interaction = fake.slash_command(ALICE, "ticket", via_gateway=False)
        good = await fake.post_interaction_http(url, interaction)
        bad = await fake.post_interaction_http(url, interaction, bad_signature=True)
    assert (good.status_code, bad.status_code) == (200, 401)
    assert json.loads(received[0][0]) == interaction
