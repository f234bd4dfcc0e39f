"""What the daemon imports: nothing it never runs."""

from __future__ import annotations

import subprocess
import sys


def test_the_daemon_does_not_import_httpx_command_line_client() -> None:
    """httpx would import click, pygments and rich for its CLI when they are installed (they
    are here: pytest brings pygments); the daemon's process loads none of that."""
    probe = (
        "import sys, diswoot.cli, diswoot.service, httpx;"
        "print(sorted(m for m in ('httpx._main', 'pygments', 'rich') if sys.modules.get(m)));"
        "print(callable(httpx.main))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    assert out[:2] == ["[]", "True"]
