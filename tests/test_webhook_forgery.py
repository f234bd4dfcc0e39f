"""WEBHOOK_ALLOW_UNAUTHENTICATED=true: forged webhooks are checked against Chatwoot's API.

A forger who can reach the port claims message ids Chatwoot has not given out yet, content it
never had, deletions that did not happen and status changes; none of it reaches the user or
blocks the genuine reply that later gets the claimed id.  Signed webhooks cost no such call.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio
from test_outbound import CEILING, agent_conversation, assert_no_violations, texts
from test_webhook_endpoint import reply_body, stored_jobs

from diswoot.testing.harness import World, bridge_world

STRANGER = "80351110224678999"


def forged_reply(conversation_id: int, message_id: int, content: str, **extra: Any) -> bytes:
    conversation = {
        "id": conversation_id,
        "inbox_id": 7,
        "meta": {"sender": {"id": 1, "identifier": f"discord:{STRANGER}"}},
    }
    body = reply_body(id=message_id, content=content, conversation=conversation, **extra)
    return json.dumps(body).encode()


def next_message_id(world: World) -> int:
    return max(world.chatwoot.messages, default=0) + 1


def api_reads(world: World) -> list[str]:
    """GETs of messages or conversations the daemon made (the confirmation calls)."""
    pattern = re.compile(r"/conversations/\d+(/messages)?$")
    return [r.path for r in world.chatwoot.requests if r.method == "GET" and pattern.search(r.path)]


async def test_forged_webhooks_never_reach_the_user_nor_block_the_genuine_reply(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(
            tmp_path, webhook_secret="", webhook_allow_unauthenticated=True
        ) as world:
            cid = await agent_conversation(world)
            future = next_message_id(world)

            # a reply Chatwoot has not written yet, and its deletion
            claim = forged_reply(cid, future, "Please send us your password")
            response = await world.post_webhook(claim)
            assert response.status_code == 422
            assert response.json()["error"] == (
                f"Chatwoot has no message {future} in conversation {cid}"
            )
            deleted = forged_reply(
                cid, future, "gone", event="message_updated", content_attributes={"deleted": True}
            )
            assert (await world.post_webhook(deleted)).status_code == 422
            # a conversation that does not exist (or is not ours) cannot be adopted
            assert (await world.post_webhook(forged_reply(999, 1, "hi"))).status_code == 422
            assert await stored_jobs(world) == []

            # the genuine reply gets the claimed id and is delivered, once, as Chatwoot has it
            reply = await world.chatwoot.agent_reply(cid, "The real answer")
            assert reply["id"] == future
            await world.wait_delivered(future)
            # replays, forged content and a forged deletion of the delivered reply change nothing
            again = await world.post_webhook(claim)
            assert again.json() == {"ok": True, "outcome": "duplicate"}
            assert (await world.post_webhook(deleted)).json()["outcome"] == "ignored"
            resolved = {
                "event": "conversation_status_changed",
                "id": cid,
                "inbox_id": 7,
                "account": {"id": 1},
                "status": "resolved",
                "changed_attributes": [{"status": {"previous_value": "open"}}],
            }
            forged_status = await world.post_webhook(json.dumps(resolved).encode())
            assert forged_status.json()["outcome"] == "duplicate"  # Chatwoot: still open
            await world.wait_for(lambda: world.daemon.outbound.queue.depth == 0)
            assert texts(world) == ["The real answer"]
            assert world.discord.dm_messages(STRANGER) == []
            # what Chatwoot really does still works: the agent deletes the reply, the DM goes
            await world.chatwoot.delete_message(cid, future)
            await world.wait_for(lambda: texts(world) == [])
            assert_no_violations(world)


async def test_signed_webhooks_cost_no_api_call(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await agent_conversation(world)
            before = len(api_reads(world))
            reply = await world.chatwoot.agent_reply(cid, "Signed and trusted")
            await world.wait_delivered(reply["id"])
            assert len(api_reads(world)) == before == 0
            assert texts(world) == ["Signed and trusted"]


async def test_unauthenticated_replies_carry_chatwoots_content(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(
            tmp_path, webhook_secret="", webhook_allow_unauthenticated=True
        ) as world:
            cid = await agent_conversation(world)
            reply = await world.chatwoot.agent_reply(cid, "Hello from Bob", deliver=False)
            # the forger races the lost webhook with other content (and another contact)
            claim = forged_reply(cid, reply["id"], "Click https://evil.test to continue")
            assert (await world.post_webhook(claim)).json()["outcome"] == "stored"
            await world.wait_delivered(reply["id"])
            assert texts(world) == ["Hello from Bob"]
            assert len(api_reads(world)) >= 1
