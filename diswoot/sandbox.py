"""``diswoot sandbox``: the real daemon against built-in fakes, driven from a console.

No credentials and no network: fake Discord (gateway + REST) and fake Chatwoot (REST + signed
webhooks) listen on 127.0.0.1, the daemon runs exactly as in production against them, and the
console lets you act as the Discord user and as a Chatwoot agent while printing what each side
sees.  Commands are read from stdin (or ``--script FILE``); ``help`` lists them.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import trio

from diswoot.bridge.contacts import contact_identifier
from diswoot.logs import setup_logging
from diswoot.testing.harness import World, bridge_world
from diswoot.testing.openapi import tolerate_missing_jsonschema

USER_ID = "80351110224678912"
USER_NAME = "alice"
SETTLE_QUIET = 0.3  # seconds without changes before the console prints and prompts again
SETTLE_MAX = 8.0

HELP = """\
As the Discord user:
  say TEXT            send the bot a DM (also: any line not starting with a command word)
  /status  /help  /reopen  /close [REASON]     slash commands
  !status  !close [REASON] ...                  the same as text commands
  rate N [COMMENT]    click the latest "Rate us" button and submit the modal
As a Chatwoot agent (on the user's latest conversation):
  reply TEXT          answer the user          note TEXT    write a private note
  resolve | open | snooze | pending            change the conversation status
Other:
  show                both sides in full       health       GET /health of the daemon
  help                this text                quit         stop the daemon and exit"""


AGENT_WORDS = frozenset({"reply", "note", "resolve", "open", "snooze", "pending"})
STATUSES = {"resolve": "resolved", "open": "open", "snooze": "snoozed", "pending": "pending"}

View = dict[str, str]  # what one side shows: item key -> rendered line


class Console:
    """Turns console lines into actions on the fakes and prints what changed on each side."""

    def __init__(self, world: World, out: TextIO) -> None:
        self.world = world
        self.out = out
        self.shown: View = {}
        world.discord.add_user(USER_ID, USER_NAME, global_name="Alice")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ views
    def _conversation_id(self) -> int | None:
        conversations = self.world.chatwoot.conversation_for(contact_identifier(USER_ID))
        return max((c["id"] for c in conversations), default=None)

    def view(self) -> View:
        """Both sides as lines: the bot's DMs, Chatwoot messages and conversation statuses."""
        cw = self.world.chatwoot
        lines = {
            f"dm:{m['id']}": f"discord  | bot -> {USER_NAME}: {describe_discord(m)}"
            for m in self.world.discord.dm_messages(USER_ID)
        }
        lines.update(
            (f"cw:{mid}", f"chatwoot | {describe_chatwoot(m)}")
            for mid, m in sorted(cw.messages.items())
        )
        lines.update(
            (f"conv:{cid}", f"chatwoot | conversation #{cid} is {c.get('status')}")
            for cid, c in sorted(cw.conversations.items())
        )
        lines.update(
            (f"csat:{mid}", f"chatwoot | CSAT response {r.get('rating')}/5: "
                            f"{r.get('feedback_message') or '(no comment)'}")
            for mid, r in sorted(cw.csat_responses.items())
        )
        return lines

    def print_changes(self) -> None:
        """Print every line that is new or changed since the last call."""
        current = self.view()
        for key, line in current.items():
            previous = self.shown.get(key)
            if previous is None:
                self.say(line)
            elif previous != line:
                self.say(line + ("  (edited)" if key.startswith(("dm:", "cw:")) else ""))
        self.shown = current

    def show(self) -> None:
        self.say(f"--- Discord DM with {USER_NAME} ---")
        for message in self.world.discord.messages.get(self._dm_channel() or "", []):
            who = "bot" if message["author"]["id"] == self.world.discord.bot_user_id else USER_NAME
            self.say(f"  {who}: {describe_discord(message)}")
        self.say("--- Chatwoot ---")
        for conv in sorted(self.world.chatwoot.conversations.values(), key=lambda c: c["id"]):
            self.say(f"  conversation #{conv['id']} ({conv['status']})")
            for message in self.world.chatwoot.messages_in(conv["id"]):
                self.say(f"    {describe_chatwoot(message)}")

    def _dm_channel(self) -> str | None:
        return next(
            (cid for cid, ch in self.world.discord.channels.items()
             if any(r.get("id") == USER_ID for r in ch.get("recipients", []))),
            None,
        )

    async def settle(self) -> None:
        """Wait until neither side changed for a moment, then print the news."""
        last, quiet_since = self.view(), trio.current_time()
        with trio.move_on_after(SETTLE_MAX):
            while trio.current_time() - quiet_since < SETTLE_QUIET:
                await trio.sleep(0.05)
                now = self.view()
                if now != last:
                    last, quiet_since = now, trio.current_time()
        self.print_changes()

    # ------------------------------------------------------------------ commands
    async def run_line(self, line: str) -> bool:
        """Execute one console line; False when the console should end."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, rest = line.partition(" ")
        cw, discord = self.world.chatwoot, self.world.discord
        if word in ("quit", "exit"):
            return False
        if word == "help":
            self.say(HELP)
        elif word == "show":
            self.show()
        elif word == "health":
            response = await self.world.http.get(self.world.base_url + "/health")
            self.say(f"{response.status_code} {response.text}")
        elif word.startswith("/"):
            options: dict[str, Any] = {"reason": rest} if word == "/close" and rest else {}
            discord.slash_command(USER_ID, word[1:], options)
        elif word == "rate":
            await self._rate(rest)
        elif word in AGENT_WORDS:
            conversation = self._conversation_id()
            if conversation is None:
                self.say("(no conversation yet: `say` something first)")
                return True
            if word in STATUSES:
                await cw.set_status(conversation, STATUSES[word])
            else:
                await cw.agent_reply(conversation, rest, private=word == "note")
        else:
            discord.user_sends(USER_ID, rest if word == "say" else line)
        await self.settle()
        return True

    async def _rate(self, rest: str) -> None:
        parts = rest.split(maxsplit=1)
        rating = parts[0] if parts else "5"
        comment = parts[1] if len(parts) > 1 else ""
        prompt = next(
            (m for m in reversed(self.world.discord.dm_messages(USER_ID))
             if _button_ids(m, lambda cid: cid.startswith("csat:"))),
            None,
        )
        if prompt is None:
            self.say("(no Rate-us button yet: resolve the conversation first)")
            return
        custom_id = _button_ids(prompt, lambda cid: cid.startswith("csat:"))[0]
        self.world.discord.click_button(USER_ID, prompt, custom_id)
        await self.settle()
        values = {"rating": rating}
        if comment:
            values["comment"] = comment
        modal_id = "csat_modal:" + custom_id.split(":", 1)[1]
        self.world.discord.submit_modal(USER_ID, modal_id, values, prompt)


def _button_ids(message: dict[str, Any], want: Callable[[str], bool]) -> list[str]:
    ids = []
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            custom_id = component.get("custom_id")
            if custom_id and want(custom_id) and not component.get("disabled"):
                ids.append(custom_id)
    return ids


def describe_discord(message: dict[str, Any]) -> str:
    parts = []
    if message.get("content"):
        parts.append(message["content"])
    for embed in message.get("embeds") or []:
        text = " - ".join(p for p in (embed.get("title"), embed.get("description")) if p)
        parts.append(f"[embed: {text}]")
    for attachment in message.get("attachments") or []:
        parts.append(f"[file: {attachment.get('filename')}]")
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            state = " (disabled)" if component.get("disabled") else ""
            parts.append(f"[button: {component.get('label')}{state}]")
    return " ".join(parts) or "(empty)"


def describe_chatwoot(message: dict[str, Any]) -> str:
    kinds = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}
    raw_type = message.get("message_type")
    kind = kinds.get(raw_type, str(raw_type)) if isinstance(raw_type, int) else str(raw_type)
    if message.get("private"):
        kind = "private note"
    files = "".join(f" [file: {a.get('data_url', '').rsplit('/', 1)[-1]}]"
                    for a in message.get("attachments") or [])
    return f"#{message.get('conversation_id')} {kind}: {message.get('content') or ''}{files}"


def prompt_for(line: str) -> str:
    """The prompt that says who acts: ``you>``, ``agent>`` or a plain ``>``."""
    word = line.strip().partition(" ")[0]
    if word in AGENT_WORDS:
        return "agent> "
    if word in ("say", "rate") or word.startswith(("/", "!")) or word not in _CONSOLE_WORDS:
        return "you> "
    return "> "


_CONSOLE_WORDS = frozenset({"show", "health", "help", "quit", "exit", ""})


async def run_sandbox(script: str | None = None, out: TextIO = sys.stdout) -> int:
    # A plain install has no jsonschema: the fakes then skip their OpenAPI schema checks.
    schemas_checked = tolerate_missing_jsonschema()
    with tempfile.TemporaryDirectory(prefix="diswoot-sandbox-") as tmp:
        async with bridge_world(
            Path(tmp), chatwoot_options={"inbox": {"csat_survey_enabled": True}}
        ) as world:
            console = Console(world, out)
            if not schemas_checked:
                console.say("(jsonschema is not installed: the fakes do not check requests "
                            "against the OpenAPI specs)")
            console.say(f"diswoot sandbox: daemon on {world.base_url} "
                        f"(try {world.base_url}/health)")
            console.say("type `help` for commands\n")
            await console.settle()
            lines = None
            if script is not None:
                lines = (await trio.Path(script).read_text("utf-8")).splitlines()
            interactive = lines is None and sys.stdin.isatty()
            while True:
                if lines is not None:
                    if not lines:
                        break
                    line = lines.pop(0)
                    console.say(f"{prompt_for(line)}{line}")
                else:
                    if interactive:
                        print("> ", end="", file=out, flush=True)
                    line = await trio.to_thread.run_sync(sys.stdin.readline,
                                                         abandon_on_cancel=True)
                    if not line:
                        break
                    if not interactive:
                        console.say(f"{prompt_for(line)}{line.rstrip()}")
                if not await console.run_line(line):
                    break
            console.say("stopping the daemon...")
    return 0


def main(script: str | None = None) -> int:
    setup_logging("WARNING")
    return trio.run(run_sandbox, script)

