"""``python -m diswoot.testing.serve`` as a real process: settings line, token check, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(("flags", "expected_status"), [([], 200), (["--bad-token"], 401)])
async def test_serve_prints_settings_and_stops_on_sigterm(
    flags: list[str], expected_status: int
) -> None:
    command = [sys.executable, "-m", "diswoot.testing.serve", *flags]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
            )
            try:
                assert proc.stdout is not None
                env = json.loads(await _read_line(proc.stdout))
                async with httpx.AsyncClient() as http:
                    gateway = await http.get(
                        env["DISCORD_API_BASE_URL"] + "/gateway/bot",
                        headers={"Authorization": f"Bot {env['DISCORD_TOKEN']}"},
                    )
                    profile = await http.get(
                        f"{env['CHATWOOT_BASE_URL']}/api/v1/profile",
                        headers={"api_access_token": env["CHATWOOT_API_TOKEN"]},
                    )
                assert gateway.status_code == expected_status
                assert profile.status_code == 200
                assert env["DISCORD_CLIENT_ID"].isdigit()
                assert int(env["CHATWOOT_ACCOUNT_ID"]) > 0
                assert int(env["CHATWOOT_INBOX_ID"]) > 0
                assert env["WEBHOOK_SECRET"]
            finally:
                proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
