"""No secret and no URL token in any log line, at DEBUG, whichever library writes it."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
import trio
from test_commands import final_responses

from diswoot.logs import REDACTED, RedactingFilter, config_secrets, setup_logging
from diswoot.testing.harness import bridge_world

CEILING = 30
USER = "80351110224678912"
BOT_TOKEN = "MTIwMDAwMDAwMDAwMDAwMDAwMA.GxYz12.bot-token-that-must-never-be-logged"
API_TOKEN = "chatwoot-user-access-token-5d1c9e"
PATH_TOKEN = "webhook-path-token-a81f3c0d9e27b645"
SINGLTY_KEY = "singlty-api-key-9b2e7f"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers; give pytest's back afterwards."""
    root = logging.getLogger()
    names = ("httpx", "httpcore", "hypercorn.access", "trio-websocket", "quart.serving")
    levels = {name: logging.getLogger(name).level for name in names}
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)


def test_the_filter_redacts_messages_arguments_exceptions_and_stacks() -> None:
    redact = RedactingFilter([PATH_TOKEN, "with space/and slash", ""])
    logger = logging.getLogger("diswoot.test.redaction")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redact)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s in an argument", PATH_TOKEN)
        logger.warning("quoted with%20space%2Fand%20slash and with%20space/and%20slash")
        logger.warning("%s", "POST https://discord.com/api/v10/interactions/123/aW50Zx.y-z_/callback")
        logger.warning("PATCH /api/v10/webhooks/456/tok.en-1/messages/@original")
        logger.warning('POST http://h:3000/webhook/anything?x=1 "HTTP/1.1 200"')
        try:
            raise RuntimeError(f"failed for {PATH_TOKEN}")
        except RuntimeError:
            logger.exception("boom")
        logger.warning("where", stack_info=True, extra={"x": PATH_TOKEN})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert PATH_TOKEN not in text and "with%20space" not in text and "and slash" not in text
    assert "/interactions/123/[redacted]/callback" in text
    assert "/webhooks/456/[redacted]/messages/@original" in text
    assert "/webhook/[redacted]?x=1" in text
    assert f"failed for {REDACTED}" in text  # the traceback's text
    assert redact.redact("no secrets here: 100%") == "no secrets here: 100%"


async def test_no_secret_or_token_in_debug_logs_of_a_full_flow(
    tmp_path: Path, restore_logging: None
) -> None:
    key = nacl.signing.SigningKey.generate()
    out = io.StringIO()
    with trio.fail_after(CEILING):
        async with bridge_world(
            tmp_path,
            start=False,
            webhook_secret="",
            webhook_path_token=PATH_TOKEN,
            discord_token=BOT_TOKEN,
            chatwoot_api_token=API_TOKEN,
            singlty_api_key=SINGLTY_KEY,
            discord_public_key=key.verify_key.encode().hex(),
            discord_options={"public_key_signer": key, "token": BOT_TOKEN},
            chatwoot_options={"api_token": API_TOKEN},
        ) as world:
            setup_logging("DEBUG", out, secrets=config_secrets(world.cfg))
            await world.start()
            fake = world.discord
            fake.add_user(USER, "alice")
            await world.wait_for(lambda: world.daemon.ctx.gateway.state == "ready")
            fake.user_sends(USER, "hello, my order is late")
            [conversation] = await world.wait_for(
                lambda: world.chatwoot.conversation_for(f"discord:{USER}")
            )
            # the webhook of this reply goes to /webhook/<token>
            reply = await world.chatwoot.agent_reply(conversation["id"], "On it")
            await world.wait_delivered(reply["id"])
            # slow answers: a deferral through the callback URL, then an edit through the
            # interaction webhook, over the gateway and over HTTP
            world.daemon.interactions.defer_after = 0.05
            world.chatwoot.latency = 0.3
            over_gateway = fake.slash_command(USER, "status")
            await final_responses(world, over_gateway)
            over_http = fake.slash_command(USER, "status", via_gateway=False)
            response = await fake.post_interaction_http(f"{world.base_url}/interactions", over_http)
            assert response.status_code == 202
            await final_responses(world, over_http)
            world.chatwoot.latency = 0.0
            await world.stop()
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = out.getvalue()
    # the URLs were logged (so the test looks at something), with their tokens redacted
    assert "/callback" in text and f"/interactions/{over_gateway['id']}/{REDACTED}/" in text
    assert f"/webhooks/{fake.application_id}/{REDACTED}" in text
    assert f"/webhook/{REDACTED}" in text
    assert "DEBUG" in text
    secrets = {
        "bot token": BOT_TOKEN,
        "Chatwoot token": API_TOKEN,
        "path token": PATH_TOKEN,
        "Singlty key": SINGLTY_KEY,
        "interaction token (gateway)": over_gateway["token"],
        "interaction token (HTTP)": over_http["token"],
    }
    leaked = [name for name, value in secrets.items() if value in text]
    if leaked:
        sys.stderr.write(text)
    assert leaked == []
