"""An agent deleting a delivered reply deletes its DM(s); a retried failed reply is re-sent."""

from __future__ import annotations

from pathlib import Path

import trio
from test_outbound import CEILING, USER, agent_conversation, assert_no_violations, jobs, texts

from diswoot.store import Job
from diswoot.testing.harness import World, bridge_world


def status(world: World, message_id: int) -> str:
    return str(world.chatwoot.messages[message_id]["status"])


def hold_the_next_send(world: World) -> None:
    """A Cloudflare 429 (retry in 60 s): the next reply job waits in the queue's backoff."""
    world.discord.fail_next(
        "POST", r"/channels/\d+/messages$", 429, retry_after=60, raw_body=b"<html>"
    )


async def finished_job(world: World, dedupe_key: str) -> Job:
    """The outbound job with this key once it left the queue (polled, 10 s at most)."""
    with trio.fail_after(10):
        while True:
            found: list[Job] = [
                j for j in await jobs(world, "outbound") if j.dedupe_key == dedupe_key
            ]
            if found and found[0].state != "pending":
                return found[0]
            await trio.sleep(0.01)


async def test_an_agent_delete_removes_every_dm_of_the_reply(tmp_path: Path) -> None:
    long_text = "\n\n".join(f"Paragraph {i}: " + "word " * 160 for i in range(4))
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            keep = await world.chatwoot.agent_reply(cid, "keep me")
            reply = await world.chatwoot.agent_reply(cid, long_text)
            await world.wait_for(lambda: status(world, reply["id"]) == "delivered")
            chunks = len(texts(world)) - 1
            assert chunks >= 2
            await world.chatwoot.delete_message(cid, reply["id"])
            await world.wait_for(lambda: texts(world) == ["keep me"])
            job = await finished_job(world, f"delete:{reply['id']}")
            assert job.state == "done" and job.result is not None
            assert len(job.result["deleted"]) == chunks
            assert status(world, keep["id"]) == "delivered"
            assert_no_violations(world)


async def test_a_dm_already_gone_is_fine(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(cid, "short-lived")
            await world.wait_for(lambda: status(world, reply["id"]) == "delivered")
            [dm] = world.discord.dm_messages(USER)
            await world.daemon.ctx.discord.delete_message(dm["channel_id"], dm["id"])
            await world.chatwoot.delete_message(cid, reply["id"])
            job = await finished_job(world, f"delete:{reply['id']}")
            assert job.state == "done" and job.result == {"deleted": [dm["id"]]}
            assert_no_violations(world)


async def test_a_reply_deleted_before_delivery_is_never_sent(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            hold_the_next_send(world)
            reply = await world.chatwoot.agent_reply(cid, "oops, wrong customer")
            await world.wait_for(lambda: world.discord.responses_429 == 1)
            await world.chatwoot.delete_message(cid, reply["id"])
            world.daemon.outbound.queue.wake()
            job = await finished_job(world, f"msg:{reply['id']}")
            assert job.result == {"suppressed": "deleted by an agent"}
            await finished_job(world, f"delete:{reply['id']}")
            assert texts(world) == []


async def test_a_reply_deleted_while_it_waits_out_a_rate_limit_is_never_sent(
    tmp_path: Path,
) -> None:
    """Discord answered 429 (retry after 5 s): the attempt waits in the rate-limit gate. The
    agent deletes the reply meanwhile: when its turn comes it is not sent (before, it was
    sent and then deleted, the user notified of a message the agent had taken back)."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            world.discord.fail_next("POST", r"/channels/\d+/messages$", 429, retry_after=5)
            reply = await world.chatwoot.agent_reply(cid, "oops, wrong customer")
            await world.wait_for(lambda: world.discord.responses_429 == 1)
            await world.chatwoot.delete_message(cid, reply["id"])  # returns once it is stored
            assert texts(world) == []  # the reply still waits out its 5 s
            job = await finished_job(world, f"msg:{reply['id']}")
            assert job.result == {"suppressed": "deleted by an agent", "discord_message_ids": []}
            deletion = await finished_job(world, f"delete:{reply['id']}")
            assert deletion.result == {"deleted": []}
            assert texts(world) == []
            posts = [
                r for r in world.discord.requests
                if r.method == "POST" and r.path.endswith("/messages")
            ]
            assert [r.status for r in posts] == [429]
            assert_no_violations(world)


async def test_a_queued_reply_deleted_before_its_first_attempt_is_never_sent(
    tmp_path: Path,
) -> None:
    """A reply stored ready to send (prepared at intake) waits behind another in its
    conversation; the agent deletes it meanwhile: it is never sent."""
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            hold_the_next_send(world)
            first = await world.chatwoot.agent_reply(cid, "first, held by a 429")
            await world.wait_for(lambda: world.discord.responses_429 == 1)
            second = await world.chatwoot.agent_reply(cid, "oops, wrong customer")
            await world.wait_for(
                lambda: world.daemon.outbound.queue.depth == 2  # stored, behind the first
            )
            await world.chatwoot.delete_message(cid, second["id"])
            await world.wait_for(lambda: world.daemon.outbound.queue.depth == 3)  # + delete
            world.daemon.outbound.queue.wake()
            job = await finished_job(world, f"msg:{second['id']}")
            assert job.result == {"suppressed": "deleted by an agent"}
            await finished_job(world, f"msg:{first['id']}")
            assert texts(world) == ["first, held by a 429"]


async def test_an_agent_retry_of_a_failed_reply_delivers_it(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world, accepts_dms=False)
            reply = await world.chatwoot.agent_reply(cid, "are you there?")
            await world.wait_for(lambda: status(world, reply["id"]) == "failed")
            await world.chatwoot.wait_webhooks_delivered()  # our "failed" mark came back
            world.discord.set_accepts_dms(USER, True)
            await world.chatwoot.agent_retry(cid, reply["id"])
            await world.wait_for(lambda: status(world, reply["id"]) == "delivered")
            assert texts(world) == ["are you there?"]
            await world.chatwoot.wait_webhooks_delivered()  # our "delivered" mark came back
            keys = [j.dedupe_key for j in await jobs(world, "outbound") if j.kind == "reply"]
            assert keys == [f"msg:{reply['id']}", f"retry:{reply['id']}:1"]
            assert texts(world) == ["are you there?"]
            assert_no_violations(world)
