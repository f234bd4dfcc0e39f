"""An agent typing in Chatwoot shows the bot typing in the user's DM, renewed while it lasts."""

from __future__ import annotations

from pathlib import Path

import trio
from test_outbound import CEILING, USER, agent_conversation, assert_no_violations, texts

from diswoot.testing.harness import World, bridge_world


def typing_count(world: World) -> int:
    """Typing triggers in the user's DM channel."""
    return sum(1 for channel in world.discord.typing if channel in dm_channels(world))


def dm_channels(world: World) -> set[str]:
    return {c["id"] for c in world.discord.channels.values() if c["recipients"][0]["id"] == USER}


async def fast_typing(world: World, *, cap: float = 30.0) -> int:
    """Renew every 0.05 s (instead of 8 s) and return the conversation id."""
    typing = world.daemon.outbound.typing
    typing.renew, typing.cap = 0.05, cap
    return await agent_conversation(world)


async def test_agent_typing_is_shown_renewed_and_stopped(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await fast_typing(world)
            typing = world.daemon.outbound.typing
            await world.chatwoot.agent_typing(cid, True)
            await world.wait_for(lambda: typing_count(world) >= 3)  # triggered, then renewed
            await world.chatwoot.agent_typing(cid, False)
            await world.wait_for(lambda: not typing.active)
            assert_no_violations(world)


async def test_typing_ends_at_the_cap_without_typing_off(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await fast_typing(world, cap=0.3)
            typing = world.daemon.outbound.typing
            await world.chatwoot.agent_typing(cid, True)
            await world.wait_for(lambda: typing.active)
            await world.wait_for(lambda: not typing.active)
            assert typing_count(world) >= 2


async def test_a_delivered_reply_ends_the_typing(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await fast_typing(world)
            typing = world.daemon.outbound.typing
            await world.chatwoot.agent_typing(cid, True)
            await world.wait_for(lambda: typing.active)
            await world.chatwoot.agent_reply(cid, "done typing")
            await world.wait_for(lambda: texts(world) == ["done typing"] and not typing.active)


async def test_private_note_and_contact_typing_are_not_shown(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path) as world:
            cid = await fast_typing(world)
            outbound = world.daemon.outbound
            await world.chatwoot.agent_typing(cid, True, private=True)
            note = world.chatwoot.delivered_events("conversation_typing_on")[-1]
            assert note["is_private"] is True
            assert await outbound.intake.accept_webhook(note) == "ignored"
            # the bridge's own contact typing comes back with the contact as the typer
            contact = {k: v for k, v in note["user"].items() if k != "type"}
            echo = {**note, "is_private": False, "user": contact}
            assert await outbound.intake.accept_webhook(echo) == "ignored"
            agent = {**note, "is_private": False}
            assert await outbound.intake.accept_webhook(agent) == "typing"
            await world.wait_for(lambda: typing_count(world) >= 1)
            await world.chatwoot.agent_typing(cid, False)
            await world.wait_for(lambda: not outbound.typing.active)
