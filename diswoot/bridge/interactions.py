"""Interactions (slash commands, the CSAT button and modal) and the ``!`` text commands.

Interactions from the gateway and from ``POST /interactions`` go through one handler,
:meth:`InteractionRouter._answer`.  Each is acknowledged within Discord's 3 s: an answer not
ready after :data:`DEFER_AFTER` is preceded by a deferral and follows as an edit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import trio
from quart import current_app

from diswoot.bridge import embeds
from diswoot.bridge.commands import (
    FAILED,
    Commands,
    command_from_interaction,
    parse_text_command,
)
from diswoot.bridge.inbound import InboundBridge
from diswoot.bridge.outbound import OutboundBridge
from diswoot.bridge.recent import RecentIds
from diswoot.chatwoot.errors import ChatwootUnavailable
from diswoot.context import Context
from diswoot.gateway.events import MessageCreate
from diswoot.rest.errors import DiscordHTTPError, DiscordUnavailable
from diswoot.store import Job
from diswoot.store import queries as q

log = logging.getLogger("diswoot.interactions")

DEFER_AFTER = 1.5
"""Seconds to wait for an answer before deferring; leaves room for gateway and callback latency
within Discord's 3 s."""
PENDING_DM_WAIT = 5.0  # seconds a command waits for the user's queued DMs to reach Chatwoot
HTTP_ANSWER_TIMEOUT = 3.0
HANDLED_REMEMBERED = 4096  # interaction ids kept to answer a repeat with nothing
EPHEMERAL = 1 << 6
CONTEXT_BOT_DM = 1
# Interaction types (discord-api.md §2.2) and callback types (§3.1)
APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 2, 3, 5
CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE = 4, 5, 6, 7

DM_ONLY = "My commands work in our direct messages: open a DM with me and try again there."
STALE_COMPONENT = "This button is no longer active."
TRY_AGAIN = "That took longer than expected; please click the button again."

SendInitial = Callable[[dict[str, Any]], Awaitable[None]]


def invoker_id(interaction: dict[str, Any]) -> str:
    """The user who triggered it: ``member.user`` in a guild, ``user`` in a DM (§2.2)."""
    user = (interaction.get("member") or {}).get("user") or interaction["user"]
    return str(user["id"])


def _ephemeral_message(embed: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": CHANNEL_MESSAGE,
        "data": {"embeds": [embed], "flags": EPHEMERAL, "allowed_mentions": {"parse": []}},
    }


def late_answer(payload: dict[str, Any], name: str, sent_at: Any) -> dict[str, Any]:
    """The answer to a command run late, saying when it was sent (Discord's timestamp)."""
    answer = {**payload, "embeds": [dict(e) for e in payload.get("embeds") or []]}
    when = "while I was offline"
    if isinstance(sent_at, str):
        try:
            when = f"<t:{int(datetime.fromisoformat(sent_at).timestamp())}:f>, {when}"
        except ValueError:
            pass
    line = f"*You sent `!{name}` {when}; it was run when I came back.*"
    if answer["embeds"]:
        first = answer["embeds"][0]
        first["description"] = "\n\n".join(x for x in (first.get("description"), line) if x)
    else:
        answer["content"] = line
    return answer


def deferral_for(interaction: dict[str, Any]) -> dict[str, Any]:
    """Type 6 (no visible change) for a component/modal on a message, else an ephemeral type 5."""
    on_message = interaction.get("type") in (MESSAGE_COMPONENT, MODAL_SUBMIT)
    if on_message and interaction.get("message"):
        return {"type": DEFERRED_UPDATE}
    return {"type": DEFERRED_MESSAGE, "data": {"flags": EPHEMERAL}}


class InteractionRouter:
    """Answers interactions and text commands; see docs/modules.md."""

    def __init__(
        self, ctx: Context, *, inbound: InboundBridge, outbound: OutboundBridge
    ) -> None:
        self.ctx = ctx
        self.inbound = inbound
        self.outbound = outbound
        self.commands = Commands(ctx, inbound.tickets)
        self.defer_after = DEFER_AFTER
        self._handled = RecentIds(HANDLED_REMEMBERED)
        inbound.command_runner = self.run_queued_command

    def first_time(self, interaction_id: str) -> bool:
        """True the first time an interaction id is seen (Discord sends each once; a repeat is
        a replayed request or a RESUME's replay, answered with nothing)."""
        if interaction_id in self._handled:
            self._count("repeated")
            return False
        self._handled.add(interaction_id)
        return True

    # ------------------------------------------------------------------ text commands
    def is_text_command(self, event: MessageCreate) -> bool:
        """``!status``, ``!close [reason]``, ``!reopen``, ``!help`` without attachments.

        A message with attachments is forwarded like any other, so nothing the user sent is
        lost; other ``!words`` are ordinary messages too.
        """
        if event.data.get("attachments") or event.data.get("sticker_items"):
            return False
        return parse_text_command(event.content, event.author_id) is not None

    async def handle_text_command(self, event: MessageCreate) -> None:
        """Run the command and reply in the DM (text commands cannot be ephemeral).

        Its message id is stored first, as a handled job of the inbound queue: a command is run
        once, whether it comes live, replayed by a RESUME or found by the backfill.  Never
        raises: it runs in the router's nursery, beside every other event.
        """
        call = parse_text_command(event.content, event.author_id)
        if call is None:
            return
        if not await self.inbound.accept_command(event, run_now=True):
            log.info("!%s %s of %s was handled already", call.name, event.id, call.user_id)
            return
        self._count(f"text_{call.name}")
        try:
            await self._after_pending_dms(call.user_id)
            payload = await self.commands.run(call)
        except Exception:
            log.exception("!%s of %s failed", call.name, call.user_id)
            self._count("failed")
            payload = {"embeds": [embeds.error_embed(self.ctx.cfg, FAILED)]}
        try:
            await self.ctx.discord.send_message(
                event.channel_id,
                embeds=payload["embeds"],
                allowed_mentions={"parse": []},
                message_reference={"message_id": event.id, "fail_if_not_exists": False},
            )
        except (DiscordHTTPError, DiscordUnavailable) as exc:
            log.warning("could not answer !%s of %s: %s", call.name, call.user_id, exc)

    async def run_queued_command(self, job: Job) -> dict[str, Any]:
        """A text command sent while the bridge was down (queued by the backfill in the user's
        inbound lane, so after their earlier DMs): run it, answer it in the DM, durably.

        Chatwoot unreachable -> raised, so the job waits for it like the DMs around it.  The
        answer is kept in the job before it is queued, so a retry never runs it again.
        """
        data: dict[str, Any] = job.payload["message"]
        event = MessageCreate(data)
        call = parse_text_command(event.content, event.author_id)
        if call is None:
            return {"outcome": "not_a_command"}
        if "answer" not in job.payload:
            try:
                payload = await self.commands.run(call, wait_for_chatwoot=True)
            except ChatwootUnavailable:
                raise  # retried, like the DMs in its lane
            except Exception:
                log.exception("late !%s of %s failed", call.name, call.user_id)
                self._count("failed")
                payload = {"embeds": [embeds.error_embed(self.ctx.cfg, FAILED)]}
            self._count(f"text_{call.name}")
            job.payload["answer"] = late_answer(payload, call.name, data.get("timestamp"))
            await self.ctx.store.call(q.update_job_payload, job.id, job.payload)
        await self.outbound.send_notice(
            call.user_id,
            {
                **job.payload["answer"],
                "allowed_mentions": {"parse": []},
                "message_reference": {"message_id": event.id, "fail_if_not_exists": False},
            },
            dedupe_key=f"command:{event.id}",
        )
        return {"command": call.name, "late": True}

    # ------------------------------------------------------------------ interactions
    async def handle_gateway(self, data: dict[str, Any]) -> None:
        """INTERACTION_CREATE from the gateway: answered through the callback endpoint.

        Never raises: it runs in the router's nursery, beside every other event.
        """

        if not self.first_time(str(data["id"])):
            return

        async def send_initial(body: dict[str, Any]) -> None:
            await self.ctx.discord.create_interaction_response(
                str(data["id"]), str(data["token"]), body
            )

        try:
            await self._respond(data, send_initial)
        except Exception:
            log.exception("interaction %s could not be handled", data.get("id"))
            self._count("failed")

    async def handle_http(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """An interaction POSTed to /interactions: the HTTP 200 body, or None (HTTP 202)
        once a deferral went out through the callback endpoint."""
        first_tx, first_rx = trio.open_memory_channel[dict[str, Any] | None](1)

        async def send_initial(body: dict[str, Any]) -> None:
            answer: dict[str, Any] | None = body
            if body.get("type") in (DEFERRED_MESSAGE, DEFERRED_UPDATE):
                try:
                    await self.ctx.discord.create_interaction_response(
                        str(data["id"]), str(data["token"]), body
                    )
                    answer = None
                except (DiscordHTTPError, DiscordUnavailable) as exc:
                    log.warning("deferral through the callback failed (%s); in the HTTP body", exc)
            try:
                first_tx.send_nowait(answer)
            except trio.BrokenResourceError:
                log.error("interaction %s answered after the HTTP request gave up", data.get("id"))

        async with first_rx:  # the sender lives in the background task
            current_app.add_background_task(self._respond, data, send_initial)
            with trio.move_on_after(HTTP_ANSWER_TIMEOUT):
                return await first_rx.receive()
        log.error("interaction %s: no answer within %.0f s", data.get("id"), HTTP_ANSWER_TIMEOUT)
        return _ephemeral_message(embeds.error_embed(self.ctx.cfg, FAILED))

    async def _respond(self, interaction: dict[str, Any], send_initial: SendInitial) -> None:
        """Race the answer against :attr:`defer_after`; defer, then complete, when late."""
        result_tx, result_rx = trio.open_memory_channel[dict[str, Any]](1)
        async with result_rx, trio.open_nursery() as nursery:
            nursery.start_soon(self._produce, interaction, result_tx)
            body: dict[str, Any] | None = None
            with trio.move_on_after(self.defer_after):
                body = await result_rx.receive()
            if body is not None:
                await self._initial(interaction, send_initial, body)
                return
            deferral = deferral_for(interaction)
            self._count("deferred")
            acknowledged = await self._initial(interaction, send_initial, deferral)
            body = await result_rx.receive()
            if acknowledged:
                await self._complete(interaction, deferral, body)

    async def _initial(
        self, interaction: dict[str, Any], send_initial: SendInitial, body: dict[str, Any]
    ) -> bool:
        try:
            await send_initial(body)
        except (DiscordHTTPError, DiscordUnavailable) as exc:
            log.warning("interaction %s could not be answered: %s", interaction.get("id"), exc)
            return False
        return True

    async def _produce(
        self, interaction: dict[str, Any], result_tx: trio.MemorySendChannel[dict[str, Any]]
    ) -> None:
        async with result_tx:
            try:
                body = await self._answer(interaction)
            except Exception:
                log.exception("interaction %s failed", interaction.get("id"))
                self._count("failed")
                body = _ephemeral_message(embeds.error_embed(self.ctx.cfg, FAILED))
            await result_tx.send(body)

    async def _answer(self, interaction: dict[str, Any]) -> dict[str, Any]:
        """The callback body for any interaction (the one handler of both delivery routes)."""
        kind = interaction.get("type")
        custom_id = str((interaction.get("data") or {}).get("custom_id") or "")
        cfg = self.ctx.cfg
        if kind == APPLICATION_COMMAND:
            call = command_from_interaction(interaction, invoker_id(interaction))
            if call is None:
                self._count("unknown")
                return _ephemeral_message(embeds.warning_embed(cfg, "I don't know that command."))
            if interaction.get("context", CONTEXT_BOT_DM) != CONTEXT_BOT_DM:
                self._count("outside_dm")
                return _ephemeral_message(embeds.info_embed(cfg, "Direct messages only", DM_ONLY))
            self._count(f"slash_{call.name}")
            await self._after_pending_dms(call.user_id)
            payload = await self.commands.run(call)
            return {"type": CHANNEL_MESSAGE, "data": {**payload, "flags": EPHEMERAL}}
        if kind == MESSAGE_COMPONENT and custom_id.startswith(embeds.CSAT_BUTTON_PREFIX):
            self._count("csat_button")
            return await self.outbound.csat.on_button(interaction)
        if kind == MODAL_SUBMIT and custom_id.startswith(embeds.CSAT_MODAL_PREFIX):
            self._count("csat_modal")
            return await self.outbound.csat.on_modal(interaction)
        self._count("unknown")
        return _ephemeral_message(embeds.warning_embed(cfg, STALE_COMPONENT))

    async def _after_pending_dms(self, user_id: str) -> None:
        """Let the user's DMs that are still on their way to Chatwoot land first.

        Otherwise ``!close`` sent right after a DM could resolve the ticket before that DM
        is posted (and Chatwoot would reopen it).  Bounded: a down Chatwoot must not stall
        the answer (slash commands are deferred meanwhile).
        """
        await self.inbound.queue.wait_lane_idle(user_id, limit=PENDING_DM_WAIT)

    async def _complete(
        self, interaction: dict[str, Any], deferral: dict[str, Any], body: dict[str, Any]
    ) -> None:
        """Deliver a late answer after ``deferral``: edit @original, or a follow-up."""
        rest = self.ctx.discord
        app_id = str(interaction.get("application_id") or self.ctx.app_id)
        token = str(interaction["token"])
        kind, data = body.get("type"), dict(body.get("data") or {})
        replaces = (deferral["type"], kind) in (
            (DEFERRED_MESSAGE, CHANNEL_MESSAGE),
            (DEFERRED_UPDATE, UPDATE_MESSAGE),
        )
        try:
            if replaces:
                data.pop("flags", None)  # an edit cannot change the ephemeral flag
                await rest.edit_original_response(app_id, token, data)
            elif kind == CHANNEL_MESSAGE:
                await rest.create_followup(app_id, token, data)
            else:  # a modal cannot follow a deferral
                await rest.create_followup(
                    app_id,
                    token,
                    {"embeds": [embeds.warning_embed(self.ctx.cfg, TRY_AGAIN)], "flags": EPHEMERAL},
                )
        except (DiscordHTTPError, DiscordUnavailable) as exc:
            log.warning("late answer to interaction %s failed: %s", interaction.get("id"), exc)

    def _count(self, kind: str) -> None:
        self.ctx.metrics.interactions.labels(kind=kind).inc()
