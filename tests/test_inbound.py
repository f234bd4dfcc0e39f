"""Discord DMs -> Chatwoot, end to end: the real daemon against FakeDiscord and FakeChatwoot.

Real sockets on 127.0.0.1 and real threads (SQLite), so these tests run on the real clock and
wait for observable effects with ``world.wait_for``; "now" for working hours and the reopen
window is injected through ``ctx.clock``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from diswoot.store import Job, open_store
from diswoot.store import queries as q
from diswoot.testing.harness import World, bridge_world, daemon_process

UID = "80351110224678912"
BOB = "80351110224678913"
TIMEOUT = 30


@asynccontextmanager
async def world_for(tmp_path: Path, **kwargs: Any) -> AsyncIterator[World]:
    """A bridge world with one user (``alice``) and a test-wide deadline."""
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, **kwargs) as world:
            world.discord.add_user(UID, "alice", global_name="Alice A.", avatar="a1b2c3")
            world.discord.add_user(BOB, "bob")
            yield world
            assert world.chatwoot.violations == []
            assert world.discord.violations == []


def incoming(world: World, conversation_id: int) -> list[dict[str, Any]]:
    """The contact's messages in a conversation (message_type 0), in order."""
    return [m for m in world.chatwoot.messages_in(conversation_id) if m["message_type"] == 0]


def all_incoming(world: World) -> list[dict[str, Any]]:
    return [m for c in sorted(world.chatwoot.conversations) for m in incoming(world, c)]


def account_calls(world: World, since: int = 0) -> list[str]:
    """Chatwoot account API calls the bridge made (inbox refreshes and probes left out)."""
    return [
        f"{r.method} {r.path.split('/', 5)[-1]}"
        for r in world.chatwoot.requests[since:]
        if r.path.startswith("/api/v1/accounts/") and "/inboxes/" not in r.path
    ]


def reacted(world: World, message_id: str) -> bool:
    return any(mid == message_id for _, mid, _ in world.discord.reactions)


def dm_texts(world: World, user_id: str) -> list[str]:
    """Everything the bot DMed the user, as JSON text (content and embeds)."""
    return [
        json.dumps({"content": m["content"], "embeds": m["embeds"]}, ensure_ascii=False)
        for m in world.discord.dm_messages(user_id)
    ]


async def delivered(world: World, *message_ids: str) -> list[dict[str, Any]]:
    """Wait until every DM is in Chatwoot and confirmed; the incoming messages, in order."""

    def done() -> bool:
        ids = {m["source_id"] for m in all_incoming(world)}
        return all(i in ids and reacted(world, i) for i in message_ids)

    await world.wait_for(done, timeout=TIMEOUT)
    return all_incoming(world)


async def stored_jobs(world: World, state: str) -> list[Job]:
    async with open_store(world.cfg.db_path) as store:
        return await store.call(q.list_jobs, (state,), "inbound")


async def pending_jobs_reach(world: World, count: int) -> None:
    """Poll the database (maybe written by another process) until ``count`` DMs wait."""
    while True:
        if len(await stored_jobs(world, "pending")) >= count:
            return
        await trio.sleep(0.02)


async def pending_jobs_reach_zero(world: World) -> None:
    """Poll the database (maybe written by another process) until no job is pending."""
    while True:
        async with open_store(world.cfg.db_path) as store:
            if not await store.call(q.list_jobs, ("pending",)):
                return
        await trio.sleep(0.05)


async def settled(world: World) -> None:
    """Wait until every stored DM was handled and every notice it caused was sent."""
    await world.wait_for(
        lambda: world.daemon.inbound.queue.depth == 0 and world.daemon.outbound.queue.depth == 0
    )


async def notices(world: World, kind: str) -> list[Job]:
    """The DMs the bridge queued for users, of one kind (``greeting``, ``ooo``, ``saved``)."""
    async with open_store(world.cfg.db_path) as store:
        jobs = await store.call(q.list_jobs, ("pending", "done", "dead"), "outbound")
    return [j for j in jobs if j.kind == "notice" and j.dedupe_key.startswith(f"{kind}:")]


def set_clock(world: World, clock: Callable[[], float]) -> None:
    world.daemon.ctx.clock = clock


async def test_a_new_users_dm_creates_contact_conversation_and_message(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends(UID, "my order is late")
        [message] = await delivered(world, sent["id"])
        fake = world.chatwoot
        contact = fake.contact_by_identifier(f"discord:{UID}")
        assert contact is not None
        assert contact["name"] == "Alice A."
        assert contact["custom_attributes"] == {
            "discord_id": UID,
            "discord_username": "alice",
            "discord_display_name": "Alice A.",
            "source": "discord",
        }
        [contact_inbox] = fake.contact_inboxes.values()
        assert contact_inbox["contact_id"] == contact["id"]
        [conversation] = fake.conversations.values()
        assert conversation["contact_inbox_id"] == contact_inbox["id"]
        assert conversation["status"] == "open"
        assert message["content"] == "my order is late"
        assert message["source_id"] == sent["id"]
        assert message["conversation_id"] == conversation["id"]
        assert account_calls(world) == [
            "POST contacts",
            "POST conversations",
            f"POST conversations/{conversation['id']}/messages",
        ]
        assert world.discord.reactions == [(sent["channel_id"], sent["id"], "✅")]


async def test_the_reaction_means_delivered(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        world.chatwoot.down = True
        sent = world.discord.user_sends(UID, "anyone there?")
        queue = world.daemon.inbound.queue
        await world.wait_for(lambda: queue.counters.retries >= 2)  # two attempts are over
        assert world.discord.reactions == []
        world.chatwoot.down = False
        world.daemon.inbound.queue.wake()
        await delivered(world, sent["id"])


async def test_later_dms_cost_one_chatwoot_call_each(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        [cid] = world.chatwoot.conversations
        mark = len(world.chatwoot.requests)
        later = [world.discord.user_sends(UID, text)["id"] for text in ("two", "three", "four")]
        messages = await delivered(world, *later)
        assert [m["content"] for m in messages] == ["one", "two", "three", "four"]
        assert {m["conversation_id"] for m in messages} == {cid}
        assert account_calls(world, mark) == [f"POST conversations/{cid}/messages"] * 3


async def test_two_simultaneous_dms_of_a_new_user(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        a = world.discord.user_sends(UID, "first")
        b = world.discord.user_sends(UID, "second")
        c = world.discord.user_sends(BOB, "bob here")
        messages = await delivered(world, a["id"], b["id"], c["id"])
        assert len(world.chatwoot.contacts) == 2
        assert len(world.chatwoot.conversations) == 2
        assert account_calls(world).count("POST contacts") == 2
        assert account_calls(world).count("POST conversations") == 2
        alice = [m["content"] for m in messages if m["content"] != "bob here"]
        assert alice == ["first", "second"]


async def test_a_gateway_replay_is_delivered_once(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        sent = world.discord.user_sends(UID, "hello")
        await delivered(world, sent["id"])
        world.discord.gateway.dispatch("MESSAGE_CREATE", {**sent, "channel_type": 1})
        after = world.discord.user_sends(UID, "after the replay")
        messages = await delivered(world, after["id"])
        assert [m["content"] for m in messages] == ["hello", "after the replay"]


async def test_an_existing_contact_is_found_after_422(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        # Another channel (the web widget) created the contact already.
        url = f"{world.chatwoot.base_url}/api/v1/accounts/{world.chatwoot.account_id}/contacts"
        headers = {"api_access_token": world.chatwoot.api_token}
        inbox = world.chatwoot.inbox_id
        created = await world.http.post(
            url,
            json={"name": "Alice from the web", "identifier": f"discord:{UID}", "inbox_id": inbox},
            headers=headers,
        )
        assert created.status_code == 200
        world.chatwoot.contact_inboxes.clear()  # ... in its own inbox, not ours
        # A contact whose identifier merely contains ours must not be picked.
        impostor = {"name": "Impostor", "identifier": f"discord:{UID}0", "inbox_id": inbox}
        assert (await world.http.post(url, json=impostor, headers=headers)).status_code == 200
        contact_id = created.json()["payload"]["contact"]["id"]
        sent = world.discord.user_sends(UID, "hi again")
        [message] = await delivered(world, sent["id"])
        assert len(world.chatwoot.contacts) == 2
        conversation = world.chatwoot.conversations[message["conversation_id"]]
        assert conversation["contact_id"] == contact_id
        calls = account_calls(world)
        assert calls[:4] == [
            "POST contacts",
            "POST contacts",
            "POST contacts",  # ours: 422
            "GET contacts/search",
        ]
        assert f"POST contacts/{contact_id}/contact_inboxes" in calls
        contact = world.chatwoot.contacts[contact_id]
        assert contact["custom_attributes"]["discord_id"] == UID
        assert contact["name"] == "Alice from the web"  # the other channel's name is kept


async def test_a_deleted_conversation_is_recreated(tmp_path: Path) -> None:
    async with world_for(tmp_path) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        [old] = world.chatwoot.conversations
        del world.chatwoot.conversations[old]  # an admin deleted it
        second = world.discord.user_sends(UID, "two")
        [message] = await delivered(world, second["id"])
        assert message["content"] == "two"
        assert message["conversation_id"] != old
        third = world.discord.user_sends(UID, "three")
        messages = await delivered(world, third["id"])
        assert {m["conversation_id"] for m in messages} == {message["conversation_id"]}


async def resolve_and_wait(world: World, conversation_id: int) -> None:
    """An agent resolves the conversation; wait until the bridge knows."""
    await world.chatwoot.set_status(conversation_id, "resolved")
    await world.chatwoot.wait_webhooks_delivered()  # answered only once stored
    conv = await world.daemon.inbound.tickets.current(UID)
    assert conv is not None and conv.status == "resolved"


async def reopen_case(tmp_path: Path, *, hours_later: float, **kwargs: Any) -> tuple[int, int]:
    """DM, resolve, ``hours_later`` DM again: (first conversation, second conversation)."""
    async with world_for(tmp_path, **kwargs) as world:
        first = world.discord.user_sends(UID, "one")
        [m1] = await delivered(world, first["id"])
        await resolve_and_wait(world, m1["conversation_id"])
        real = world.daemon.ctx.clock
        set_clock(world, lambda: real() + hours_later * 3600)
        second = world.discord.user_sends(UID, "two")
        messages = await delivered(world, second["id"])
        m2 = messages[-1]
        assert world.chatwoot.conversations[m2["conversation_id"]]["status"] == "open"
        return m1["conversation_id"], m2["conversation_id"]


async def test_reopen_always_with_a_zero_window(tmp_path: Path) -> None:
    first, second = await reopen_case(tmp_path, hours_later=500, reopen_window_hours=0)
    assert first == second


async def test_reopen_within_the_window(tmp_path: Path) -> None:
    first, second = await reopen_case(tmp_path, hours_later=0.5, reopen_window_hours=1)
    assert first == second


async def test_new_conversation_after_the_window(tmp_path: Path) -> None:
    first, second = await reopen_case(tmp_path, hours_later=2, reopen_window_hours=1)
    assert first != second


async def test_locked_inbox_always_reopens(tmp_path: Path) -> None:
    first, second = await reopen_case(
        tmp_path,
        hours_later=2,
        reopen_window_hours=1,
        chatwoot_options={"inbox": {"lock_to_single_conversation": True}},
    )
    assert first == second


def new_york_hours(**extra: Any) -> dict[str, Any]:
    """Mon-Fri 09:00-17:00 in New York (DST started on Sunday 2024-03-10)."""
    days = []
    for day in range(7):
        closed = day in (0, 6)
        days.append(
            {
                "day_of_week": day,
                "closed_all_day": closed,
                "open_all_day": False,
                "open_hour": None if closed else 9,
                "open_minutes": None if closed else 0,
                "close_hour": None if closed else 17,
                "close_minutes": None if closed else 0,
            }
        )
    return {
        "timezone": "America/New_York",
        "working_hours_enabled": True,
        "working_hours": days,
        "out_of_office_message": "We are out, back at nine (New York time).",
    } | extra


FRIDAY_BEFORE_DST = 1709904600.0  # Fri 2024-03-08 13:30 UTC = 08:30 EST: closed
MONDAY_AFTER_DST = 1710163800.0  # Mon 2024-03-11 13:30 UTC = 09:30 EDT: open
FRIDAY_OPENING = 1709906400  # Fri 2024-03-08 14:00 UTC = 09:00 EST


async def test_deny_mode_outside_hours_across_dst(tmp_path: Path) -> None:
    async with world_for(
        tmp_path,
        outside_hours_behavior=False,
        chatwoot_options={"inbox": new_york_hours()},
    ) as world:
        set_clock(world, lambda: FRIDAY_BEFORE_DST)
        denied = world.discord.user_sends(UID, "friday morning")
        await world.wait_for(lambda: dm_texts(world, UID))
        [notice] = dm_texts(world, UID)
        assert "We are out, back at nine" in notice
        assert f"<t:{FRIDAY_OPENING}" in notice
        assert account_calls(world) == []
        assert not reacted(world, denied["id"])
        set_clock(world, lambda: MONDAY_AFTER_DST)
        accepted = world.discord.user_sends(UID, "monday morning")
        [message] = await delivered(world, accepted["id"])
        assert message["content"] == "monday morning"
        await settled(world)
        assert len(dm_texts(world, UID)) == 2  # + the greeting, no second out-of-office notice
        assert len(await notices(world, "ooo")) == 1
        [job] = [j for j in await stored_jobs(world, "done") if j.dedupe_key == denied["id"]]
        assert job.result == {"outcome": "denied_outside_hours"}


async def test_allow_mode_outside_hours_across_dst(tmp_path: Path) -> None:
    async with world_for(
        tmp_path,
        outside_hours_behavior=True,
        greeting_enabled=False,
        chatwoot_options={"inbox": new_york_hours()},
    ) as world:
        set_clock(world, lambda: FRIDAY_BEFORE_DST)
        a = world.discord.user_sends(UID, "friday one")
        b = world.discord.user_sends(UID, "friday two")
        [m1, _] = await delivered(world, a["id"], b["id"])
        conversation = world.chatwoot.conversations[m1["conversation_id"]]
        assert conversation["status"] == "pending"
        await world.wait_for(lambda: dm_texts(world, UID))
        set_clock(world, lambda: MONDAY_AFTER_DST)
        c = world.discord.user_sends(UID, "monday")
        await delivered(world, c["id"])
        await settled(world)
        [notice] = dm_texts(world, UID)  # one out-of-office notice per ticket
        assert len(await notices(world, "ooo")) == 1
        assert "We are out, back at nine" in notice


async def test_the_greeting_is_sent_once(tmp_path: Path) -> None:
    async with world_for(
        tmp_path,
        chatwoot_options={
            "inbox": {"greeting_enabled": True, "greeting_message": "Welcome from the inbox!"}
        },
    ) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        [cid] = world.chatwoot.conversations
        del world.chatwoot.conversations[cid]  # the next DM opens a second ticket
        second = world.discord.user_sends(UID, "two")
        [message] = await delivered(world, second["id"])
        assert message["conversation_id"] != cid
        await settled(world)
        greetings = [t for t in dm_texts(world, UID) if "Welcome from the inbox!" in t]
        assert len(greetings) == 1
        assert len(dm_texts(world, UID)) == 1


async def test_the_fallback_greeting(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_message="Hello from the env!") as world:
        sent = world.discord.user_sends(UID, "one")
        await delivered(world, sent["id"])
        await world.wait_for(lambda: dm_texts(world, UID))
        [greeting] = dm_texts(world, UID)
        assert "Hello from the env!" in greeting


async def test_chatwoot_down_then_back_delivers_everything_once_in_order(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "before the outage")
        await delivered(world, first["id"])
        world.chatwoot.down = True
        ids = [world.discord.user_sends(UID, f"during {n}")["id"] for n in range(3)]
        bob = world.discord.user_sends(BOB, "bob during")["id"]
        queue = world.daemon.inbound.queue
        await world.wait_for(lambda: queue.counters.retries >= 4)  # each lane failed twice
        await world.wait_for(lambda: world.daemon.outbound.queue.depth == 0)
        assert len(dm_texts(world, UID)) == 1  # "saved, will be delivered", once per user
        assert len(dm_texts(world, BOB)) == 1
        assert len(await notices(world, "saved")) == 2
        assert all_incoming(world)[-1]["content"] == "before the outage"
        world.chatwoot.down = False
        world.daemon.inbound.queue.wake()
        messages = await delivered(world, *ids, bob)
        alice = [m["content"] for m in messages if m["content"] != "bob during"]
        assert alice == ["before the outage"] + [f"during {n}" for n in range(3)]
        assert len({m["source_id"] for m in messages}) == len(messages)


async def test_a_lost_answer_does_not_duplicate(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        [cid] = world.chatwoot.conversations
        lost = world.chatwoot.lose_next_answer(f"/conversations/{cid}/messages")
        sent = world.discord.user_sends(UID, "two")
        await world.wait_for(lambda: lost == [200])
        await world.wait_for(lambda: any(r.status == 502 for r in world.chatwoot.requests))
        world.daemon.inbound.queue.wake()
        messages = await delivered(world, sent["id"])
        assert [m["content"] for m in messages] == ["one", "two"]
        calls = account_calls(world)
        assert calls.count(f"POST conversations/{cid}/messages") == 2
        assert f"GET conversations/{cid}/messages" in calls


async def test_a_crash_after_posting_does_not_duplicate(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        [cid] = world.chatwoot.conversations
        lost = world.chatwoot.lose_next_answer(f"/conversations/{cid}/messages", delay=60)
        sent = world.discord.user_sends(UID, "two")
        await world.wait_for(lambda: lost == [200])  # Chatwoot saved it...
        await world.crash()  # ...and the daemon died before hearing the answer
        await world.start()
        messages = await delivered(world, sent["id"])
        assert [m["content"] for m in messages] == ["one", "two"]
        assert account_calls(world).count(f"POST conversations/{cid}/messages") == 2
        later = world.discord.user_sends(UID, "three")
        messages = await delivered(world, later["id"])
        assert [m["content"] for m in messages] == ["one", "two", "three"]


async def test_stored_dms_survive_a_crash(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        world.chatwoot.down = True
        ids = [world.discord.user_sends(UID, f"m{n}")["id"] for n in range(3)]
        await world.wait_for(lambda: any(r.status == 503 for r in world.chatwoot.requests))
        await world.wait_for(lambda: world.daemon.inbound.queue.depth == 3)
        await world.crash()
        assert [j.dedupe_key for j in await stored_jobs(world, "pending")] == ids
        world.chatwoot.down = False
        await world.start()
        messages = await delivered(world, *ids)
        assert [m["content"] for m in messages] == ["m0", "m1", "m2"]


async def test_only_the_dm_about_to_run_is_stored_with_a_posting_note(tmp_path: Path) -> None:
    """A posting note means "this DM may be in Chatwoot already": after a restart every noted
    DM is searched for before its POST (GETs paging on from the note's ``after``).  So only the
    DM about to run is stored with one; those queued behind it are noted just before their own
    POST, and a backlog left by a restart costs no searches."""
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "m0")
        await delivered(world, first["id"])
        await settled(world)
        world.chatwoot.down = True
        ids = [world.discord.user_sends(UID, f"m{n}")["id"] for n in (1, 2, 3)]
        await world.wait_for(lambda: world.daemon.inbound.queue.depth == 3)
        await world.crash()
        noted = {j.dedupe_key: "posting" in j.payload for j in await stored_jobs(world, "pending")}
        assert noted == {ids[0]: True, ids[1]: False, ids[2]: False}
        world.chatwoot.down = False
        await world.start()
        messages = await delivered(world, *ids)
        assert [m["content"] for m in messages] == ["m0", "m1", "m2", "m3"]


async def test_sigkill_between_stored_and_delivered(tmp_path: Path) -> None:
    """A real ``python -m diswoot`` is SIGKILLed while Chatwoot is saving a DM; a new daemon
    on the same database delivers every DM exactly once, in order."""
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, start=False, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            lost = world.chatwoot.lose_next_answer("/messages", delay=60)
            async with daemon_process(world.cfg) as proc:
                ids = [world.discord.user_sends(UID, f"m{n}")["id"] for n in range(3)]
                await world.wait_for(lambda: lost == [200], timeout=TIMEOUT)
                await world.wait_for(lambda: world.chatwoot.messages)  # m0 is saved...
                await pending_jobs_reach(world, 3)  # ...and m1, m2 are stored
                proc.kill()
                await proc.wait()
            await world.start()
            messages = await delivered(world, *ids)
            assert [m["content"] for m in messages] == ["m0", "m1", "m2"]
            assert world.chatwoot.violations == []


async def test_a_dm_to_an_open_conversation_takes_two_store_hops(tmp_path: Path) -> None:
    """Steady state: the DM's job is stored with its posting note (one hop), the delivery is
    recorded with the job's end (one hop), the ✅ job's end rides along later."""
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "m0")
        await delivered(world, first["id"])
        await settled(world)
        store = world.daemon.ctx.store
        before = store.batches
        sent = world.discord.user_sends(UID, "m1")
        await delivered(world, sent["id"])
        await settled(world)
        assert store.batches - before == 2
        [job] = [j for j in await store.call(q.list_jobs, ("done",), "inbound")
                 if j.dedupe_key == sent["id"]]
        assert job.payload["posting"]["conversation_id"] == all_incoming(world)[0][
            "conversation_id"]


async def test_sigkill_after_a_post_noted_at_intake_still_delivers_once(tmp_path: Path) -> None:
    """The posting note stored with the job (known open conversation) protects the POST as
    the one written before it does: a new daemon finds the lost message, posts nothing."""
    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, start=False, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            async with daemon_process(world.cfg) as proc:
                first = world.discord.user_sends(UID, "m0")
                await world.wait_for(lambda: reacted(world, first["id"]), timeout=TIMEOUT)
                lost = world.chatwoot.lose_next_answer("/messages", delay=60)
                sent = world.discord.user_sends(UID, "m1")
                await world.wait_for(lambda: lost == [200], timeout=TIMEOUT)
                proc.kill()
                await proc.wait()
            [job] = [j for j in await stored_jobs(world, "pending") if j.dedupe_key == sent["id"]]
            assert "posting" in job.payload
            await world.start()
            messages = await delivered(world, first["id"], sent["id"])
            assert [m["content"] for m in messages] == ["m0", "m1"]
            assert world.chatwoot.violations == []


async def test_an_unwritten_confirmation_end_repeats_the_reaction_after_a_kill(
    tmp_path: Path,
) -> None:
    """The end of a ✅ job is a deferred write (adding a reaction twice changes nothing): a
    SIGKILL before it is written makes the next daemon add the reaction again, nothing else;
    a graceful stop writes it."""

    async def pending_outbound() -> list[Job]:
        async with open_store(world.cfg.db_path) as store:
            return await store.call(q.list_jobs, ("pending",), "outbound")

    def reactions(message_id: str) -> list[tuple[str, str, str]]:
        return [r for r in world.discord.reactions if r[1] == message_id]

    with trio.fail_after(TIMEOUT):
        async with bridge_world(tmp_path, start=False, greeting_enabled=False) as world:
            world.discord.add_user(UID, "alice")
            async with daemon_process(world.cfg) as proc:
                first = world.discord.user_sends(UID, "m0")  # the first DM has follow-ups
                await world.wait_for(lambda: reactions(first["id"]), timeout=TIMEOUT)
                await pending_jobs_reach_zero(world)
                sent = world.discord.user_sends(UID, "m1")
                await world.wait_for(lambda: reactions(sent["id"]), timeout=TIMEOUT)
                proc.kill()
                await proc.wait()
            assert [j.dedupe_key for j in await pending_outbound()] == [f"react:{sent['id']}"]
            await world.start()
            await world.wait_for(lambda: len(reactions(sent["id"])) == 2, timeout=TIMEOUT)
            await world.stop()
            assert await pending_outbound() == []
            assert len(reactions(first["id"])) == 1
            assert [m["source_id"] for m in all_incoming(world)] == [first["id"], sent["id"]]


async def test_edits_and_deletions_become_private_notes(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        sent = world.discord.user_sends(UID, "my odrer is late")
        [message] = await delivered(world, sent["id"])
        cid = message["conversation_id"]
        world.discord.user_edits(UID, sent["id"], "my order is late")
        world.discord.user_deletes(UID, sent["id"])

        def notes() -> list[dict[str, Any]]:
            return [m for m in world.chatwoot.messages_in(cid) if m["private"]]

        await world.wait_for(lambda: len(notes()) == 2)
        edited, deleted = notes()
        assert edited["content"] == "✏️ edited: my order is late"
        assert "deleted" in deleted["content"]
        assert edited["content_attributes"]["in_reply_to"] == message["id"]
        assert deleted["content_attributes"]["in_reply_to"] == message["id"]


async def test_a_rejected_dm_is_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        world.chatwoot.fail_next("POST", r"/messages$", 403)
        rejected = world.discord.user_sends(UID, "two")
        after = world.discord.user_sends(UID, "three")
        messages = await delivered(world, after["id"])
        assert [m["content"] for m in messages] == ["one", "three"]
        [dead] = await stored_jobs(world, "dead")
        assert dead.dedupe_key == rejected["id"]
        assert dead.last_error is not None and "403" in dead.last_error
        assert "API inbox" in dead.last_error


async def test_chatwoots_message_rate_limit_is_waited_out(tmp_path: Path) -> None:
    async with world_for(tmp_path, greeting_enabled=False) as world:
        first = world.discord.user_sends(UID, "one")
        await delivered(world, first["id"])
        too_many = {"error": "Validation failed: Too many messages"}
        world.chatwoot.fail_next("POST", r"/messages$", 422, body=too_many)
        sent = world.discord.user_sends(UID, "two")
        queue = world.daemon.inbound.queue
        await world.wait_for(lambda: queue.counters.retries == 1)
        assert await stored_jobs(world, "dead") == []
        queue.wake()
        messages = await delivered(world, sent["id"])
        assert [m["content"] for m in messages] == ["one", "two"]
