"""What the daemon imports: nothing it never runs."""

from __future__ import annotations

import subprocess
import sys


def probe(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter (this one has imported everything)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")


def test_the_daemon_does_not_import_httpx_command_line_client() -> None:
    """httpx would import click, pygments and rich for its CLI when they are installed (they
    are here: pytest brings pygments); the daemon's process loads none of that."""
    out = probe(
        "import sys, diswoot.cli, diswoot.service, httpx;"
        "print(sorted(m for m in ('httpx._main', 'pygments', 'rich') if sys.modules.get(m)));"
        "print(callable(httpx.main))"
    )
    assert out[:2] == ["[]", "True"]


def test_pynacl_is_loaded_only_for_http_interactions() -> None:
    """libsodium is 1.2 MB of memory; a daemon without DISCORD_PUBLIC_KEY never verifies an
    Ed25519 signature (interactions come through the gateway)."""
    out = probe(
        "import sys, diswoot.cli, diswoot.service;"
        "print('nacl' in sys.modules);"
        "from diswoot.webhook.app import verify_key;"
        "verify_key('00' * 32); print('nacl' in sys.modules)"
    )
    assert out[:2] == ["False", "True"]
