"""Native CSAT: "Rate us" button -> modal -> Chatwoot's public CSAT API, through the fakes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from test_outbound import USER, agent_conversation, assert_no_violations

from diswoot.bridge.csat import survey_expired
from diswoot.snowflake import snowflake_from_time
from diswoot.store import queries as q
from diswoot.testing.harness import World, bridge_world

CEILING = 30
CSAT_INBOX = {"chatwoot_options": {"inbox": {"csat_survey_enabled": True}}}


async def resolved_with_prompt(world: World) -> tuple[int, dict[str, Any]]:
    """A resolved conversation and the "Rate us" message the user received."""
    cid = await agent_conversation(world)
    await world.chatwoot.set_status(cid, "resolved")
    messages = await world.wait_for(
        lambda: [m for m in world.discord.dm_messages(USER) if m["components"]]
    )
    return cid, messages[0]


async def callback(world: World, interaction: dict[str, Any], index: int = 0) -> Any:
    """The ``index``-th response the daemon gave to ``interaction``."""
    responses = world.discord.interaction_responses
    found = await world.wait_for(lambda: len(responses.get(interaction["id"], [])) > index)
    assert found
    return responses[interaction["id"]][index]


async def rate(
    world: World, cid: int, prompt: dict[str, Any], values: dict[str, str]
) -> dict[str, Any]:
    """Click the button, then submit the modal; returns the modal's interaction callback."""
    click = world.discord.click_button(USER, prompt, f"csat:{cid}")
    modal = await callback(world, click)
    assert modal["type"] == 9 and modal["data"]["custom_id"] == f"csat_modal:{cid}"
    submit = world.discord.submit_modal(USER, f"csat_modal:{cid}", values, prompt)
    answer: dict[str, Any] = await callback(world, submit)
    return answer


def ephemeral_text(answer: dict[str, Any]) -> str:
    assert answer["type"] == 4 and answer["data"]["flags"] == 64
    return str(answer["data"]["embeds"])


def button(message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = message["components"][0]["components"][0]
    return result


async def test_rating_lands_in_chatwoot_and_disables_the_button(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **CSAT_INBOX) as world:
            cid, prompt = await resolved_with_prompt(world)
            answer = await rate(world, cid, prompt, {"rating": "4", "comment": "Quick, thanks"})
            assert "Thanks" in ephemeral_text(answer)
            rows = await world.wait_for(lambda: list(world.chatwoot.csat_responses.values()))
            assert (rows[0]["rating"], rows[0]["feedback_message"]) == (4, "Quick, thanks")
            await world.wait_for(lambda: button(prompt).get("disabled"))
            assert "★★★★☆" in str(prompt["embeds"])
            saved = await world.daemon.ctx.store.call(q.get_csat, cid)
            assert saved is not None and saved.rating == 4
            await world.wait_for(lambda: world.daemon.outbound.csat.queue.depth == 0)
            saved = await world.daemon.ctx.store.call(q.get_csat, cid)
            assert saved is not None and saved.submitted_at is not None
            assert_no_violations(world)


async def test_invalid_rating_changes_nothing(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **CSAT_INBOX) as world:
            cid, prompt = await resolved_with_prompt(world)
            for bad in ("9", "0", "x", "4.5"):
                submit = world.discord.submit_modal(USER, f"csat_modal:{cid}", {"rating": bad})
                assert "1 to 5" in ephemeral_text(await callback(world, submit))
            assert await world.daemon.ctx.store.call(q.get_csat, cid) is None
            assert world.chatwoot.csat_responses == {}
            assert not button(prompt).get("disabled")


async def test_already_rated_is_told_and_not_resubmitted(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **CSAT_INBOX) as world:
            cid, prompt = await resolved_with_prompt(world)
            await rate(world, cid, prompt, {"rating": "5"})
            await world.wait_for(lambda: world.chatwoot.csat_responses)
            again = world.discord.submit_modal(USER, f"csat_modal:{cid}", {"rating": "1"})
            assert "Already rated" in ephemeral_text(await callback(world, again))
            click = world.discord.click_button(USER, prompt, f"csat:{cid}")
            assert "Already rated" in ephemeral_text(await callback(world, click))
            submissions = [r for r in world.chatwoot.requests if "/csat_survey/" in r.path]
            assert [r.method for r in submissions] == ["PATCH"]
            assert [r["rating"] for r in world.chatwoot.csat_responses.values()] == [5]


async def test_locked_survey_tells_the_user(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **CSAT_INBOX) as world:
            cid, prompt = await resolved_with_prompt(world)
            world.chatwoot.age_csat(cid, 15)
            click = world.discord.click_button(USER, prompt, f"csat:{cid}")
            assert (await callback(world, click))["type"] == 9
            submit = world.discord.submit_modal(USER, f"csat_modal:{cid}", {"rating": "3"}, prompt)
            await callback(world, submit)
            followup = await callback(world, submit, 1)
            assert "Survey expired" in str(followup["followup"]["embeds"])
            assert followup["followup"]["flags"] == 64
            await world.wait_for(lambda: prompt["components"] == [])
            assert "Survey expired" in str(prompt["embeds"])
            assert world.chatwoot.csat_responses == {}
            assert_no_violations(world)


async def test_chatwoot_down_during_submission_delivers_later(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **CSAT_INBOX) as world:
            cid, prompt = await resolved_with_prompt(world)
            world.chatwoot.down = True
            answer = await rate(world, cid, prompt, {"rating": "2", "comment": "slow"})
            assert "Thanks" in ephemeral_text(answer)
            await world.wait_for(lambda: button(prompt).get("disabled"))
            queue = world.daemon.outbound.csat.queue
            await world.wait_for(lambda: queue.counters.retries >= 1)
            assert world.chatwoot.csat_responses == {}
            world.chatwoot.down = False
            queue.wake()
            rows = await world.wait_for(lambda: list(world.chatwoot.csat_responses.values()))
            assert (rows[0]["rating"], rows[0]["feedback_message"]) == (2, "slow")


async def test_someone_elses_or_unknown_survey_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(CEILING):
        async with bridge_world(tmp_path, **CSAT_INBOX) as world:
            cid, prompt = await resolved_with_prompt(world)
            world.discord.add_user("80351110224678913", "mallory")
            forged = world.discord.submit_modal(
                "80351110224678913", f"csat_modal:{cid}", {"rating": "1"}
            )
            assert "not available" in ephemeral_text(await callback(world, forged))
            unknown = world.discord.click_button(USER, prompt, "csat:999")
            assert "not available" in ephemeral_text(await callback(world, unknown))
            assert await world.daemon.ctx.store.call(q.get_csat, cid) is None


def test_survey_expiry_follows_chatwoots_calendar_rule() -> None:
    created = datetime(2026, 6, 1, 23, 59, tzinfo=UTC)
    prompt_id = str(snowflake_from_time(created))
    day = 86400.0
    fourteen_days_later = datetime(2026, 6, 15, 23, 59, tzinfo=UTC).timestamp()
    assert not survey_expired(prompt_id, fourteen_days_later)
    assert survey_expired(prompt_id, fourteen_days_later + day)
    assert not survey_expired(None, fourteen_days_later + day)
