"""``diswoot sandbox --script FILE`` end to end: a real subprocess, the real daemon, the fakes."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import trio

from diswoot.sandbox import prompt_for

TIMEOUT = 90
REPO = Path(__file__).resolve().parent.parent

SCRIPT = """\
# a whole ticket, as in the README's "try it in a minute"
say my order is late
reply We are on it
resolve
rate 5 Great help
health
quit
say this line is never run
"""


# A sitecustomize that makes jsonschema (and referencing, which comes with it) unimportable, as
# on a plain `pip install diswoot` without the test or fakes extras.
BLOCK_JSONSCHEMA = """\
import sys


class BlockJsonschema:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("jsonschema", "referencing"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, BlockJsonschema())
"""


def without_jsonschema(tmp_path: Path) -> dict[str, str]:
    """Environment variables for a child Python that cannot import jsonschema."""
    blocker = tmp_path / "no-jsonschema"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_JSONSCHEMA, encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}


async def run_sandbox_script(
    tmp_path: Path, script: str, extra_env: dict[str, str] | None = None
) -> str:
    path = tmp_path / "script.txt"
    path.write_text(script, encoding="utf-8")
    # No credentials at all: the sandbox needs none, and must not read a stray .env either.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "CHATWOOT_"))}
    env.update(extra_env or {})
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "diswoot", "sandbox", "--script", str(path)],
            env=env, cwd=tmp_path, stdin=b"", capture_stdout=True, capture_stderr=True,
            check=False,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr, stderr
    return stdout


def after(lines: list[str], marker: str) -> list[str]:
    """The output lines printed in response to the console line ``marker``."""
    start = lines.index(marker) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(("you> ", "agent> ",
                                                                             "> "))), len(lines))
    return lines[start:end]


async def test_a_whole_ticket_shows_both_sides(tmp_path: Path) -> None:
    output = await run_sandbox_script(tmp_path, SCRIPT)
    lines = output.splitlines()

    said = after(lines, "you> say my order is late")
    assert any(re.fullmatch(r"chatwoot \| #\d+ incoming: my order is late", x) for x in said), said
    assert any(re.fullmatch(r"chatwoot \| conversation #\d+ is (open|pending)", x) for x in said)

    replied = after(lines, "agent> reply We are on it")
    assert any(re.fullmatch(r"chatwoot \| #\d+ outgoing: We are on it", x) for x in replied)
    assert "discord  | bot -> alice: We are on it" in replied, replied

    resolved = after(lines, "agent> resolve")
    assert any(re.fullmatch(r"chatwoot \| conversation #\d+ is resolved", x) for x in resolved)
    notices = [x for x in resolved if x.startswith("discord  | bot -> alice:")]
    assert any("resolved" in x for x in notices), resolved
    assert any("[button: ⭐ Rate us]" in x for x in notices), resolved

    rated = after(lines, "you> rate 5 Great help")
    thanks = [x for x in rated if x.startswith("discord  | bot -> alice:")]
    # the prompt is edited into the thanks, its button disabled
    assert any("Thanks for your feedback!" in x and "(disabled)" in x and x.endswith("(edited)")
               for x in thanks), rated
    assert "chatwoot | CSAT response 5/5: Great help" in rated, rated

    health = after(lines, "> health")
    assert health and health[0].startswith('200 {"'), health
    assert lines[-1] == "stopping the daemon..."
    assert "you> say this line is never run" not in lines


async def test_the_sandbox_runs_without_jsonschema(tmp_path: Path) -> None:
    env = without_jsonschema(tmp_path)
    probe = await trio.run_process(
        [sys.executable, "-c", "import jsonschema"], env={**os.environ, **env},
        capture_stderr=True, check=False,
    )
    assert probe.returncode != 0 and b"blocked" in probe.stderr  # the blocker works

    output = await run_sandbox_script(tmp_path, "say hello\nreply hi there\nquit\n", env)
    lines = output.splitlines()
    assert "(jsonschema is not installed: the fakes do not check requests against the OpenAPI " \
        "specs)" in lines
    assert any(re.fullmatch(r"chatwoot \| #\d+ incoming: hello", x)
               for x in after(lines, "you> say hello")), lines
    assert "discord  | bot -> alice: hi there" in after(lines, "agent> reply hi there"), lines


async def test_without_jsonschema_the_fakes_refuse_to_run_unchecked(tmp_path: Path) -> None:
    """Outside the sandbox (in the tests) a missing jsonschema is an error, never silence."""
    code = "from diswoot.testing.fake_discord import FakeDiscord; FakeDiscord()"
    result = await trio.run_process(
        [sys.executable, "-c", code],
        env={**os.environ, **without_jsonschema(tmp_path)}, capture_stderr=True, check=False,
    )
    assert result.returncode != 0
    assert b"pip install 'diswoot[fakes]'" in result.stderr


def test_prompts_say_who_acts() -> None:
    assert prompt_for("say hi") == "you> "
    assert prompt_for("hello there") == "you> "
    assert prompt_for("/status") == "you> "
    assert prompt_for("!close done") == "you> "
    assert prompt_for("rate 4") == "you> "
    assert prompt_for("reply hi") == "agent> "
    assert prompt_for("snooze") == "agent> "
    assert prompt_for("show") == "> "
    assert prompt_for("quit") == "> "
