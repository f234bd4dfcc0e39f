"""User commands: ``/status``, ``/close [reason]``, ``/reopen``, ``/help`` and their ``!`` forms.

Both forms run the same :class:`Commands` code and get the same answer (a message payload with
one embed); :mod:`diswoot.bridge.interactions` sends it as an ephemeral interaction response
or as a reply in the DM.  The ticket work itself (private note, status change, reopen window,
the ``closed_by_user`` flag) belongs to :class:`diswoot.bridge.tickets.Tickets`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from diswoot.bridge import embeds
from diswoot.bridge.tickets import CLOSED_STATUSES, ContactGone, NoTicket, Tickets
from diswoot.chatwoot.errors import ChatwootError, ChatwootNotFound, ChatwootUnavailable
from diswoot.context import Context
from diswoot.store import Conversation

log = logging.getLogger("diswoot.commands")

TEXT_PREFIX = "!"
REASON_MAX_LENGTH = 500
# Guild-installed app (integration type 0); usable only in the DM with the bot (context 1,
# BOT_DM): tickets live in DMs, so offering the commands in servers would only confuse
# (discord-api.md §4: `[1]` for DMs only).
_WHERE = {"integration_types": [0], "contexts": [1]}

COMMAND_DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "status",
        "type": 1,
        "description": "Show your support ticket: status, ticket ID and last activity",
        **_WHERE,
    },
    {
        "name": "close",
        "type": 1,
        "description": "Close your support ticket",
        "options": [
            {
                "type": 3,
                "name": "reason",
                "description": "Why you are closing it (shared privately with the support team)",
                "required": False,
                "max_length": REASON_MAX_LENGTH,
            }
        ],
        **_WHERE,
    },
    {
        "name": "reopen",
        "type": 1,
        "description": "Reopen your resolved or snoozed support ticket",
        **_WHERE,
    },
    {
        "name": "help",
        "type": 1,
        "description": "Show the commands and how this support bot works",
        **_WHERE,
    },
]
COMMAND_NAMES = frozenset(c["name"] for c in COMMAND_DEFINITIONS)
_TEXT_COMMAND = re.compile(r"!\s*(\w+)(?:\s+(.*))?", re.DOTALL)

NO_TICKET = "You don't have a support ticket yet. Just send me a message to open one."
TICKET_GONE = (
    "Your ticket could not be found; it may have been deleted. "
    "Send me a new message to open a fresh ticket."
)
UNREACHABLE = (
    "Our support service is unreachable right now. Please try again in a few minutes; "
    "messages you send me meanwhile are kept and delivered once it is back."
)
FAILED = "Something went wrong. Please try again in a moment."


@dataclass(frozen=True)
class CommandCall:
    """One command invocation: who ran which command, with what reason, in which form."""

    name: str
    user_id: str
    reason: str | None = None
    prefix: str = "/"  # "/" for slash commands, "!" for text commands


def parse_text_command(content: str, user_id: str) -> CommandCall | None:
    """``!status``, ``!close [reason]``, ``!reopen``, ``!help`` (any case, as the original bot)."""
    match = _TEXT_COMMAND.fullmatch(content.strip())
    if match is None or match.group(1).lower() not in COMMAND_NAMES:
        return None
    name = match.group(1).lower()
    reason = (match.group(2) or "").strip() if name == "close" else ""
    return CommandCall(name, user_id, reason[:REASON_MAX_LENGTH] or None, TEXT_PREFIX)


def command_from_interaction(interaction: dict[str, Any], user_id: str) -> CommandCall | None:
    """The call behind an APPLICATION_COMMAND interaction, or None for a command we don't know."""
    data = interaction.get("data") or {}
    name = data.get("name")
    if name not in COMMAND_NAMES:
        return None
    options = {o.get("name"): o.get("value") for o in data.get("options") or []}
    reason = options.get("reason")
    text = reason.strip()[:REASON_MAX_LENGTH] if isinstance(reason, str) else ""
    return CommandCall(str(name), user_id, text or None, "/")


class Commands:
    """Runs a :class:`CommandCall` and returns the answer as a message payload (``embeds``)."""

    def __init__(self, ctx: Context, tickets: Tickets) -> None:
        self._ctx = ctx
        self._cfg = ctx.cfg
        self._tickets = tickets

    async def run(self, call: CommandCall, *, wait_for_chatwoot: bool = False) -> dict[str, Any]:
        """The answer to ``call``; Chatwoot trouble becomes a friendly explanation.

        ``wait_for_chatwoot``: an unreachable Chatwoot raises :class:`ChatwootUnavailable`
        instead, so a queued command (one sent while the bridge was down) is retried until
        it can really run.
        """
        handler = {
            "status": self._status,
            "close": self._close,
            "reopen": self._reopen,
            "help": self._help,
        }[call.name]
        cfg = self._cfg
        try:
            answer = await handler(call)
        except ChatwootNotFound:
            answer = [embeds.warning_embed(cfg, TICKET_GONE)]
        except (ChatwootUnavailable, NoTicket, ContactGone) as exc:
            if isinstance(exc, NoTicket | ContactGone):
                answer = [embeds.info_embed(cfg, "No ticket yet", NO_TICKET)]
            elif wait_for_chatwoot:
                raise
            else:
                log.warning("%s%s of %s: Chatwoot unavailable: %s",
                            call.prefix, call.name, call.user_id, exc)
                self._ctx.health.report_chatwoot_failure(str(exc), self._ctx.clock())
                answer = await self._unreachable(call)
        except ChatwootError as exc:
            log.error("%s%s of %s failed: %s", call.prefix, call.name, call.user_id, exc)
            answer = [embeds.error_embed(cfg, FAILED)]
        return {"embeds": answer, "allowed_mentions": {"parse": []}}

    async def _unreachable(self, call: CommandCall) -> list[dict[str, Any]]:
        """Chatwoot is down: say so; ``status`` adds the last status the bridge knows."""
        answer = [embeds.warning_embed(self._cfg, UNREACHABLE)]
        if call.name == "status":
            ticket = await self._tickets.current(call.user_id, refresh=False)
            if ticket is not None and ticket.status:
                answer.append(self._status_embed(ticket, title="Last known status"))
        return answer

    def _status_embed(self, ticket: Conversation, *, title: str | None = None) -> dict[str, Any]:
        last = ticket.last_activity_at or ticket.status_at
        embed = embeds.status_embed(
            self._cfg,
            status=ticket.status or "unknown",
            conversation_id=ticket.conversation_id,
            last_activity=datetime.fromtimestamp(last, UTC) if last else None,
        )
        if title is not None:
            embed["title"] = title
        return embed

    async def _status(self, call: CommandCall) -> list[dict[str, Any]]:
        ticket = await self._tickets.current(call.user_id, refresh=True)
        if ticket is None:
            return [embeds.info_embed(self._cfg, "No ticket yet", NO_TICKET)]
        return [self._status_embed(ticket)]

    async def _close(self, call: CommandCall) -> list[dict[str, Any]]:
        cfg = self._cfg
        ticket = await self._tickets.current(call.user_id, refresh=True)
        if ticket is None:
            return [embeds.info_embed(cfg, "No open ticket", "You don't have an open ticket.")]
        if ticket.status == "resolved":
            text = f"Ticket #{ticket.conversation_id} is already closed."
            return [embeds.info_embed(cfg, "Already closed", text)]
        note = "The user closed this ticket from Discord."
        if call.reason:
            note += f"\nReason: {call.reason}"
        closed = await self._tickets.resolve(call.user_id, note=note)
        if closed is None:
            return [embeds.info_embed(cfg, "No open ticket", "You don't have an open ticket.")]
        text = f"Ticket #{closed} is closed. Send me a message whenever you need help again."
        return [embeds.success_embed(cfg, "Ticket closed", text)]

    async def _reopen(self, call: CommandCall) -> list[dict[str, Any]]:
        cfg = self._cfg
        ticket = await self._tickets.current(call.user_id, refresh=True)
        if ticket is None:
            return [embeds.info_embed(cfg, "No ticket yet", NO_TICKET)]
        if ticket.status not in CLOSED_STATUSES:
            text = (
                f"Ticket #{ticket.conversation_id} is already open; "
                "an agent will reply here as soon as possible."
            )
            return [embeds.info_embed(cfg, "Already open", text)]
        choice = await self._tickets.reopen(
            call.user_id, note=f"The user reopened this {ticket.status} ticket from Discord."
        )
        if choice.created:
            text = (
                f"Your previous ticket #{ticket.conversation_id} has expired, so I opened a new "
                f"one: #{choice.conversation_id}. Tell us what you need help with."
            )
            return [embeds.success_embed(cfg, "New ticket opened", text)]
        text = f"Ticket #{choice.conversation_id} is open again. An agent will be with you soon."
        return [embeds.success_embed(cfg, "Ticket reopened", text)]

    async def _help(self, call: CommandCall) -> list[dict[str, Any]]:
        p = call.prefix
        commands = "\n".join(
            [
                f"`{p}status` - your ticket's status, ID and last activity",
                f"`{p}close [reason]` - close your ticket (the reason goes to our team)",
                f"`{p}reopen` - reopen a resolved or snoozed ticket",
                f"`{p}help` - this message",
            ]
        )
        how = (
            "Everything you send me here is forwarded to our support team, and their replies "
            f"arrive here in this DM. A {self._cfg.confirm_emoji or 'reaction'} on your message "
            "means the team has it."
        )
        embed = embeds.branded(
            self._cfg,
            title=f"{self._cfg.brand_name} help",
            description="Send me a direct message to reach our support team.",
            color=self._cfg.color_primary,
            fields=[("Commands", commands, False), ("How it works", how, False)],
        )
        return [embed]
