"""Agent replies whose webhook never arrived reach the user once, through the sweep."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from test_outbound import CEILING, USER, agent_conversation, assert_no_violations, texts

from diswoot.bridge.reconcile import is_deliverable
from diswoot.store import queries as q
from diswoot.testing.fake_chatwoot import rails_json
from diswoot.testing.harness import World, bridge_world


def recovered_metric(world: World) -> str:
    metrics = world.daemon.ctx.metrics.render().decode()
    return next(
        (line for line in metrics.splitlines() if line.startswith("diswoot_recovered_total")),
        "",
    )


def status(world: World, message_id: int) -> str:
    return str(world.chatwoot.messages[message_id]["status"])


async def first_sweep(world: World) -> None:
    """The sweep that sets the epoch (nothing older is ever replayed); no grace in tests."""
    reconciler = world.daemon.outbound.reconciler
    reconciler.grace = 0.0
    report = await reconciler.sweep()
    assert report.recovered == 0


async def test_a_lost_webhook_reply_reaches_the_user_once_via_the_sweep(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            await first_sweep(world)
            reply = await world.chatwoot.agent_reply(cid, "lost in transit", deliver=False)
            assert world.chatwoot.lost_webhooks
            report = await world.daemon.outbound.reconciler.sweep()
            assert report.recovered == 1
            await world.wait_for(lambda: status(world, reply["id"]) == "delivered")
            assert texts(world) == ["lost in transit"]
            assert (await world.daemon.outbound.reconciler.sweep()).recovered == 0
            assert texts(world) == ["lost in transit"]
            assert recovered_metric(world) == 'diswoot_recovered_total{source="reconcile"} 1.0'
            assert_no_violations(world)


async def test_a_reply_delivered_both_ways_is_sent_once(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            await first_sweep(world)
            sweeper = world.daemon.outbound.reconciler
            await world.chatwoot.agent_reply(cid, "by webhook")
            await world.wait_for(lambda: texts(world) == ["by webhook"])
            assert (await sweeper.sweep()).recovered == 0
            # the other order: the sweep first, then the (late) webhook
            await world.chatwoot.agent_reply(cid, "by sweep", deliver=False)
            assert (await sweeper.sweep()).recovered == 1
            body = world.chatwoot.lost_webhooks[-1]
            response = await world.post_webhook(*signed(world, body))
            assert response.json()["outcome"] == "duplicate"
            await world.wait_for(lambda: len(texts(world)) == 2)
            assert texts(world) == ["by webhook", "by sweep"]
            assert_no_violations(world)


def signed(world: World, body: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    """A webhook body signed the way Chatwoot signs it."""
    raw = rails_json(body)
    timestamp = int(world.chatwoot.clock())
    return raw, {
        "X-Chatwoot-Timestamp": str(timestamp),
        "X-Chatwoot-Signature": world.chatwoot.sign(raw, timestamp),
    }


async def test_a_reply_sent_while_the_daemon_was_stopped_arrives_after_restart(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, reconcile_interval_seconds=3600) as world:
            cid = await agent_conversation(world)
            await world.wait_for(lambda: world.daemon.outbound.reconciler.last_report)
            await world.stop()
            reply = await world.chatwoot.agent_reply(cid, "written during the downtime")
            assert world.chatwoot.webhook_deliveries[-1].status is None  # nobody listening
            await world.start()  # the start-up sweep finds it
            await world.wait_for(lambda: status(world, reply["id"]) == "delivered")
            assert texts(world) == ["written during the downtime"]
            assert world.chatwoot.messages[reply["id"]]["content_attributes"] == {}
            assert_no_violations(world)


async def test_periodic_sweeps_recover_without_being_asked(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, reconcile_interval_seconds=1) as world:
            world.daemon.outbound.reconciler.grace = 0.0
            cid = await agent_conversation(world)
            await world.wait_for(lambda: world.daemon.outbound.reconciler.last_report)
            await world.chatwoot.agent_reply(cid, "found by a later sweep", deliver=False)
            await world.wait_for(lambda: texts(world))
            assert texts(world) == ["found by a later sweep"]


async def test_history_before_the_first_sweep_is_not_replayed(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            old = await world.chatwoot.agent_reply(cid, "before the bridge", deliver=False)
            world.chatwoot.messages[old["id"]]["created_at"] -= 3600
            await first_sweep(world)
            assert (await world.daemon.outbound.reconciler.sweep()).recovered == 0
            conv = await world.daemon.ctx.store.call(q.get_conversation, cid)
            assert conv is not None and conv.reconcile_cursor == old["id"]
            assert texts(world) == []


async def test_pages_of_a_hundred_and_an_unknown_conversation(tmp_path: Path) -> None:
    """More than one page after the cursor; a conversation whose creation webhook was lost."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            await first_sweep(world)
            public = {3, 60, 104}  # private notes fill the pages but are never sent
            for i in range(105):
                await world.chatwoot.agent_reply(
                    cid, f"reply {i}", private=i not in public, deliver=False
                )
            second_user = "80351110224678913"
            urls, world.chatwoot.webhook_urls = world.chatwoot.webhook_urls, []
            other = await agent_conversation(world, second_user)
            for i in range(25):
                await world.chatwoot.agent_reply(other, f"other {i}", private=i not in (0, 24))
            world.chatwoot.webhook_urls = urls
            assert await world.daemon.ctx.store.call(q.get_conversation, other) is None
            report = await world.daemon.outbound.reconciler.sweep()
            assert report.recovered == 5
            await world.wait_for(lambda: len(texts(world)) == 3 and texts(world, second_user))
            assert texts(world) == [f"reply {i}" for i in sorted(public)]
            assert texts(world, second_user) == ["other 0", "other 24"]
            pages = [
                r.query
                for r in world.chatwoot.requests
                if r.method == "GET" and r.path.endswith(f"/conversations/{cid}/messages")
            ]
            assert pages[-2:] == [{"after": "0"}, {"after": str(max_id(world, cid, 100))}]
            assert_no_violations(world)


def max_id(world: World, conversation_id: int, count: int) -> int:
    return int(world.chatwoot.messages_in(conversation_id)[count - 1]["id"])


async def test_an_agent_bot_token_disables_the_sweep_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            world.chatwoot.fail_next("GET", r"/conversations$", 401)
            reconciler = world.daemon.outbound.reconciler
            with caplog.at_level(logging.WARNING, logger="diswoot.reconcile"):
                await reconciler.sweep()
                await reconciler.sweep()
            assert reconciler.disabled
            warnings = [r for r in caplog.records if r.name == "diswoot.reconcile"]
            assert len(warnings) == 1 and "user access token" in warnings[0].getMessage()


def test_only_public_undeleted_agent_replies_are_deliverable() -> None:
    reply = {"message_type": 1, "private": False, "content": "hi", "content_attributes": {}}
    assert is_deliverable(reply)
    assert not is_deliverable({**reply, "private": True})
    assert not is_deliverable({**reply, "message_type": 0})
    assert not is_deliverable({**reply, "message_type": 3})
    assert not is_deliverable({**reply, "content_attributes": {"deleted": True}})
    assert not is_deliverable({**reply, "content": " ", "attachments": []})
    assert is_deliverable({**reply, "content": None, "attachments": [{"id": 1}]})
    assert not is_deliverable({**reply, "message_type": "bogus"})


async def test_a_conversation_the_sweep_maps_keeps_the_contacts_source_id(tmp_path: Path) -> None:
    """An agent starts a conversation while no webhook reaches the daemon; the sweep maps it
    from the REST shape (no top-level contact_inbox: chatwoot-api.md).  The user's next DM
    goes to that conversation through the same contact_inbox, not a second one."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            world.discord.add_user(USER, "alice")
            fake, client = world.chatwoot, world.daemon.ctx.chatwoot
            urls, fake.webhook_urls = fake.webhook_urls, []  # the daemon hears nothing
            contact = await client.create_contact(name="alice", identifier=f"discord:{USER}")
            conversation = await client.create_conversation(
                contact_id=contact.id, source_id=contact.source_id
            )
            fake.webhook_urls = urls
            cid = int(conversation["id"])
            await first_sweep(world)
            await fake.agent_reply(cid, "we noticed your order", deliver=False)
            assert (await world.daemon.outbound.reconciler.sweep()).recovered == 1
            await world.wait_for(lambda: texts(world) == ["we noticed your order"])
            world.discord.user_sends(USER, "thanks")
            await world.wait_for(
                lambda: any(m["content"] == "thanks" for m in fake.messages.values())
            )
            [dm] = [m for m in fake.messages.values() if m["content"] == "thanks"]
            assert dm["conversation_id"] == cid
            assert len(fake.contact_inboxes) == 1
            user = await world.daemon.ctx.store.user(USER)
            assert user is not None and user.source_id == contact.source_id
            assert_no_violations(world)


def test_the_source_id_is_read_from_webhook_and_rest_shapes() -> None:
    """Webhooks carry ``contact_inbox`` at the top; REST conversations only inside
    ``messages[0].conversation`` (chatwoot-api.md), or not at all before a first message."""
    from diswoot.bridge.webhook_intake import _source_id

    assert _source_id({"contact_inbox": {"source_id": "abc"}}) == "abc"
    rest = {"messages": [{"conversation": {"contact_inbox": {"source_id": "def"}}}]}
    assert _source_id(rest) == "def"
    for shape in ({}, {"messages": []}, {"messages": "x"}, {"contact_inbox": {"source_id": 5}}):
        assert _source_id(shape) is None


async def test_a_lost_status_webhook_reaches_the_user_once_via_the_sweep(tmp_path: Path) -> None:
    """The agent answers and resolves; both webhooks are lost.  The sweep delivers the reply,
    then the resolution notice (in that order), once; the stored status follows Chatwoot."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, csat_enabled=False) as world:
            cid = await agent_conversation(world)
            await first_sweep(world)
            fake = world.chatwoot
            await fake.agent_reply(cid, "all sorted", deliver=False)
            await fake.set_status(cid, "resolved", deliver=False)
            sweeper = world.daemon.outbound.reconciler
            report = await sweeper.sweep()
            assert (report.recovered, report.statuses) == (1, 1)
            await world.wait_for(lambda: len(texts(world)) == 2)
            assert texts(world)[0] == "all sorted" and "Ticket resolved" in texts(world)[1]
            conv = await world.daemon.ctx.store.conversation(cid)
            assert conv is not None and conv.status == "resolved"
            assert (await sweeper.sweep()).statuses == 0
            await fake.deliver_late(fake.lost_webhooks)  # they arrive after all: nothing new
            await fake.agent_reply(cid, "marker")
            await world.wait_for(lambda: "marker" in texts(world))
            assert len(texts(world)) == 3
            assert_no_violations(world)


async def test_a_status_change_within_the_grace_is_left_to_its_webhook(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            await first_sweep(world)
            world.daemon.outbound.reconciler.grace = 3600.0
            await world.chatwoot.set_status(cid, "snoozed", deliver=False)
            assert (await world.daemon.outbound.reconciler.sweep()).statuses == 0
            conv = await world.daemon.ctx.store.conversation(cid)
            assert conv is not None and conv.status == "open"
