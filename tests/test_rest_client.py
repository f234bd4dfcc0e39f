"""DiscordRest over httpx.MockTransport on trio's autojump clock (no sockets)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from diswoot import __version__
from diswoot.rest.client import DiscordRest, UploadFile
from diswoot.rest.errors import DiscordHTTPError, DiscordRateLimited, DiscordUnavailable

BASE = "https://discord.test/api/v10"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Recorder:
    """Routes requests to a scripted handler and records them with their trio time."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, httpx.Request]] = []
        self.script: list[httpx.Response | Exception] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((trio.current_time(), request))
        await trio.sleep(0.01)  # network latency on the virtual clock
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        if request.url.path.endswith("/users/@me/channels"):
            return httpx.Response(200, json={"id": "555", "type": 1, "recipients": []})
        if request.method == "GET" and request.url.path.endswith("/messages"):
            return httpx.Response(200, json=[])
        if request.method in ("PUT", "DELETE") or request.url.path.endswith("/typing"):
            return httpx.Response(204)
        return httpx.Response(200, json={"id": "1", "echo": True})

    def paths(self) -> list[str]:
        return [r.url.raw_path.decode() for _, r in self.seen]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def rest(recorder: Recorder) -> AsyncIterator[DiscordRest]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as http:
        yield DiscordRest(http, base_url=BASE, token="tok", user_agent_extra="tests")


def discord_error(status: int, code: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message})


async def test_headers_and_default_body(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(5):
        await rest.send_message("42", content="hi", nonce="abc")
    _, request = recorder.seen[0]
    assert request.headers["authorization"] == "Bot tok"
    assert request.headers["user-agent"] == (
        f"DiscordBot (https://github.com/diswoot/diswoot, {__version__}) tests"
    )
    assert json.loads(request.content) == {
        "allowed_mentions": {"parse": []},
        "content": "hi",
        "nonce": "abc",
        "enforce_nonce": True,
    }
    assert rest.stats.requests == 1
    assert rest.stats.by_route["POST /channels/{channel_id}/messages"] == 1


async def test_emoji_is_percent_encoded(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(5):
        await rest.add_reaction("1", "2", "👍")
        await rest.add_reaction("1", "2", "ticket:123")
    assert recorder.paths() == [
        "/api/v10/channels/1/messages/2/reactions/%F0%9F%91%8D/@me",
        "/api/v10/channels/1/messages/2/reactions/ticket%3A123/@me",
    ]


async def test_multipart_upload_shape(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    files = [
        UploadFile("receipt.png", "image/png", b"\x89PNG", description="a receipt"),
        UploadFile("notes.txt", "text/plain", b"hello", spoiler=True),
    ]
    with trio.fail_after(5):
        await rest.send_message("42", content="files", files=files)
    _, request = recorder.seen[0]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'name="payload_json"' in body
    assert b'name="files[0]"; filename="receipt.png"' in body
    assert b'name="files[1]"; filename="notes.txt"' in body
    payload = json.loads(body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
    assert payload["attachments"] == [
        {"id": "0", "filename": "receipt.png", "description": "a receipt"},
        {"id": "1", "filename": "notes.txt", "is_spoiler": True},
    ]
    assert payload["content"] == "files"


async def test_error_codes_surface(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [
        discord_error(403, 50007, "Cannot send messages to this user"),
        discord_error(404, 10008, "Unknown Message"),
    ]
    with trio.fail_after(5):
        with pytest.raises(DiscordHTTPError) as cannot_dm:
            await rest.send_message("42", content="hi", nonce="n")
        with pytest.raises(DiscordHTTPError) as unknown:
            await rest.edit_message("42", "7", content="x")
    assert (cannot_dm.value.status, cannot_dm.value.code) == (403, 50007)
    assert cannot_dm.value.permanent
    assert unknown.value.code == 10008
    assert unknown.value.route == "PATCH /channels/{channel_id}/messages/{message_id}"
    assert len(recorder.seen) == 2  # 4xx is never retried


async def test_5xx_retried_for_idempotent_requests_only(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [httpx.Response(502), httpx.Response(500)]
    with trio.fail_after(120):
        assert await rest.get_user("9") == {"id": "1", "echo": True}
        assert len(recorder.seen) == 3
        first, last = recorder.seen[0][0], recorder.seen[-1][0]
        assert last - first >= 0.5  # backed off
        recorder.script = [httpx.Response(503)]
        with pytest.raises(DiscordUnavailable):
            await rest.send_message("42", content="no nonce: not retried")
        assert len(recorder.seen) == 4
        recorder.script = [httpx.Response(503), httpx.ConnectError("refused")]
        await rest.send_message("42", content="nonce: retried", nonce="n1")
        assert len(recorder.seen) == 7
        recorder.script = [httpx.Response(500)] * 10
        with pytest.raises(DiscordUnavailable):
            await rest.get_current_user()
        assert len(recorder.seen) == 7 + 6  # 1 try + max_retries


async def test_read_error_not_retried_for_unsafe_post(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [httpx.ReadError("reset")]
    with trio.fail_after(5), pytest.raises(DiscordUnavailable):
        await rest.create_followup("1", "tok", {"content": "x"})
    assert len(recorder.seen) == 1


def limited(remaining: int, reset_after: float, bucket: str = "b1") -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset-After": str(reset_after),
        "X-RateLimit-Bucket": bucket,
    }


async def test_exhausted_bucket_waits_for_reset(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [
        httpx.Response(200, json={"id": "1"}, headers=limited(1, 3.0)),
        httpx.Response(200, json={"id": "2"}, headers=limited(0, 2.99)),
        httpx.Response(200, json={"id": "3"}, headers=limited(1, 3.0)),
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(partial(rest.send_message, "42", content=str(n)))
                await trio.testing.wait_all_tasks_blocked()
    times = [t for t, _ in recorder.seen]
    assert times[2] - times[0] >= 3.0
    assert rest.stats.rate_limit_waits >= 1
    # FIFO: the bodies went out in the order the callers queued.
    assert [json.loads(r.content)["content"] for _, r in recorder.seen] == ["0", "1", "2"]


async def test_per_route_429_waits_retry_after(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [
        httpx.Response(
            429,
            json={"message": "slow down", "retry_after": 4.0, "global": False},
            headers={**limited(0, 4.0), "X-RateLimit-Scope": "user"},
        )
    ]
    with trio.fail_after(30):
        await rest.send_message("42", content="x")  # a 429 was not processed: safe to resend
    (first, _), (second, _) = recorder.seen
    assert second - first >= 4.0
    assert rest.stats.responses_429 == 1


async def test_global_429_pauses_every_route(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [
        httpx.Response(429, json={"message": "global", "retry_after": 5.0, "global": True})
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rest.get_current_user)
            await trio.sleep(1.0)  # the 429 has arrived
            nursery.start_soon(rest.get_user, "77")
            nursery.start_soon(partial(rest.send_message, "43", content="x"))
            nursery.start_soon(rest.create_interaction_response, "9", "tok", {"type": 6})
    start = recorder.seen[0][0]
    after = {r.url.path: t - start for t, r in recorder.seen[1:]}
    assert after["/api/v10/users/77"] >= 5.0
    assert after["/api/v10/channels/43/messages"] >= 5.0
    assert after["/api/v10/interactions/9/tok/callback"] < 5.0  # exempt from the global limit


async def test_cloudflare_429_raises_without_retry(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    recorder.script = [
        httpx.Response(429, text="<html>1015</html>", headers={"Retry-After": "600"})
    ]
    with trio.fail_after(5), pytest.raises(DiscordRateLimited) as banned:
        await rest.get_current_user()
    assert banned.value.retry_after == 600
    assert not banned.value.permanent
    assert len(recorder.seen) == 1


async def test_proactive_global_limit(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for channel in range(120):
                nursery.start_soon(rest.trigger_typing, str(channel))
    times = sorted(t for t, _ in recorder.seen)
    assert len(times) == 120
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 1.0) <= 50
    assert times[-1] - times[0] >= 2.0


async def test_the_global_window_follows_a_queue_at_discord(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A burst waits for answers (nothing is known before them), then each slot frees as its
    own answer allows: the next burst goes at the pace Discord served the first."""
    arrivals: list[float] = []
    serving = trio.Lock()

    async def one_at_a_time(request: httpx.Request) -> httpx.Response:
        async with serving:
            arrivals.append(trio.current_time())
            await trio.sleep(0.01)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(one_at_a_time)) as http:
        rest = DiscordRest(http, base_url=BASE, token="tok")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for channel in range(150):
                    nursery.start_soon(rest.trigger_typing, str(channel))
    assert len(arrivals) == 150
    for i, t in enumerate(arrivals):
        assert sum(1 for u in arrivals[i:] if u < t + 1.0) <= 50
    assert arrivals[-1] - arrivals[0] < 2.6  # slots held for the first burst's spread: 3.5 s


async def test_a_request_that_waited_out_its_window_for_a_global_slot_resets_its_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Reserved in one 5 s window of a channel, sent in the next after waiting for a global
    slot: its answer describes the new window, so the requests behind it use all of it
    (counting the stale reservation against the new window made the last one wait ~5 s)."""
    windows: dict[str, tuple[float, int]] = {}
    messages: list[float] = []
    too_many = 0

    async def discord(request: httpx.Request) -> httpx.Response:
        nonlocal too_many
        now, path = trio.current_time(), request.url.path
        await trio.sleep(0.01)
        if not path.endswith("/messages"):
            return httpx.Response(204)
        start, count = windows.get(path, (-math.inf, 0))
        if now >= start + 5.0:
            start, count = now, 0
        if count >= 5:
            too_many += 1
            body = {"message": "slow down", "retry_after": start + 5.0 - now, "global": False}
            return httpx.Response(429, json=body)
        windows[path] = (start, count + 1)
        messages.append(now)
        headers = {
            "x-ratelimit-limit": "5",
            "x-ratelimit-remaining": str(4 - count),
            "x-ratelimit-reset-after": f"{start + 5.0 - now:.3f}",
            "x-ratelimit-bucket": "messages",
        }
        return httpx.Response(200, json={"id": "1"}, headers=headers)

    async def five_messages() -> None:
        for index in range(5):
            await rest.send_message("1", content=f"reply {index}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(discord)) as http:
        rest = DiscordRest(http, base_url=BASE, token="tok")
        with trio.fail_after(30):
            await rest.send_message("1", content="greeting")  # the window [0, 5): 4 left
            await trio.sleep(4.5)
            async with trio.open_nursery() as nursery:
                for channel in range(50):  # every global slot, until ~5.5
                    nursery.start_soon(rest.trigger_typing, str(100 + channel))
                await trio.sleep(0.1)
                nursery.start_soon(five_messages)  # the first reserved at 4.6, sent at ~5.5
    assert too_many == 0
    assert len(messages) == 6
    assert messages[1] >= 5.0  # it did wait out the first window
    assert messages[-1] - messages[1] < 1.0  # all five in the second window, not a third


async def test_create_dm_is_cached(
    rest: DiscordRest, recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(5):
        assert await rest.create_dm("80351110224678912") == "555"
        assert await rest.create_dm("80351110224678912") == "555"
    assert len(recorder.seen) == 1
    assert json.loads(recorder.seen[0][1].content) == {"recipient_id": "80351110224678912"}
