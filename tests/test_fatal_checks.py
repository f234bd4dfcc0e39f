"""A token refused while running ends the daemon with 78 and names the variable to change."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from diswoot.chatwoot.client import ChatwootClient
from diswoot.errors import FatalConfigurationError
from diswoot.fatal_checks import refuse_rejected_tokens
from diswoot.rest.client import DiscordRest


@pytest.mark.parametrize(
    ("refused", "variable", "other"),
    [
        ("chatwoot", "CHATWOOT_API_TOKEN", "DISCORD_TOKEN"),
        ("discord", "DISCORD_TOKEN", "CHATWOOT_API_TOKEN"),
    ],
)
async def test_the_refused_token_is_the_one_named(
    refused: str, variable: str, other: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with httpx.AsyncClient() as http:
        discord = DiscordRest(http, base_url="http://127.0.0.1:9/api/v10", token="t")
        chatwoot = ChatwootClient(
            http, base_url="http://127.0.0.1:9", account_id=1, inbox_id=7, api_token="t"
        )
        with trio.move_on_after(3600) as waited:  # nothing is refused: it only waits
            await refuse_rejected_tokens(discord, chatwoot)
        assert waited.cancelled_caught
        (chatwoot if refused == "chatwoot" else discord).token_rejected.set()
        with pytest.raises(FatalConfigurationError) as caught:
            await refuse_rejected_tokens(discord, chatwoot)
    assert variable in str(caught.value) and other not in str(caught.value)
