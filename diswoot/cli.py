"""Command line: ``diswoot [run|deploy-commands|check|queue|sandbox]``.

Exit statuses (the public contract): 0 success / clean shutdown; 78 (EX_CONFIG) configuration
or authentication error - systemd must not restart; 1 anything else.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from diswoot import __version__, early_signals
from diswoot.config import (
    DEFAULT_DB_PATH,
    EX_CONFIG,
    Config,
    ConfigError,
    load_config,
    read_environment,
    webhook_auth_problem,
)
from diswoot.errors import find_fatal
from diswoot.logs import config_secrets, setup_logging

log = logging.getLogger("diswoot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diswoot",
        description="Bridge Discord direct messages and Chatwoot conversations.",
        epilog="Configuration comes from the environment and ./.env (the environment wins).",
    )
    parser.add_argument("--version", action="version", version=f"diswoot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the daemon (the default)")
    sub.add_parser("deploy-commands", help="register the slash commands globally")
    check = sub.add_parser(
        "check", help="validate the configuration and probe Discord and Chatwoot"
    )
    check.add_argument(
        "--env-file",
        metavar="FILE",
        help="read this file (e.g. /etc/diswoot/diswoot.env) instead of ./.env, with the rules "
        "of systemd's EnvironmentFile=",
    )
    queue = sub.add_parser("queue", help="list pending and dead-lettered work")
    queue.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    queue.add_argument("ids", nargs="*", type=int, help="job ids to retry (default: all dead)")
    sandbox = sub.add_parser(
        "sandbox", help="run the daemon against built-in fakes (no credentials needed)"
    )
    sandbox.add_argument("--script", help="read console commands from this file instead of stdin")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    if command == "run":
        early_signals.install()  # the `diswoot` script; `python -m diswoot` did already
    else:
        early_signals.uninstall()
    if command == "sandbox":
        from diswoot.sandbox import main as sandbox_main

        return sandbox_main(script=args.script)
    explicit: str | None = getattr(args, "env_file", None)
    env_file = Path(explicit or ".env")
    env: dict[str, str] = {}
    try:
        if explicit and not env_file.is_file():
            raise ConfigError([f"{env_file}: no such file"])
        env = read_environment(dotenv=env_file, as_systemd=explicit is not None)
        if command == "queue":  # the database is all it needs: no credentials
            db_path = Path(env.get("DISWOOT_DB_PATH", "").strip() or DEFAULT_DB_PATH)
            if not db_path.exists():
                print(f"no database at {db_path} (check DISWOOT_DB_PATH): nothing is queued")
                return 0
            return trio.run(queue_cli, db_path, args.action, args.ids)
        cfg = load_config(env, dotenv=None)
        problem = webhook_auth_problem(cfg) if command == "run" else None
        if problem is not None:
            raise ConfigError([problem])
    except ConfigError as exc:
        print(f"diswoot: {exc}", file=sys.stderr)
        if command == "check":
            _print_notes(env, env_file, as_systemd=explicit is not None)
        print("See .env.example for every variable and its meaning.", file=sys.stderr)
        return EX_CONFIG
    setup_logging(cfg.log_level, secrets=config_secrets(cfg))
    if command == "run":
        return run_daemon(cfg)
    if command == "deploy-commands":
        from diswoot.bridge.deploy import deploy_commands_cli

        return deploy_commands_cli(cfg)
    if command == "check":
        from diswoot.check import check_cli, environment_notes

        notes = environment_notes(env, env_file, as_systemd=explicit is not None)
        return check_cli(cfg, notes=notes)
    raise AssertionError(command)


def _print_notes(env: dict[str, str], env_file: Path, *, as_systemd: bool) -> None:
    """The check's warnings about how the configuration is written, after a ConfigError."""
    from diswoot.check import environment_notes

    for what, fix in environment_notes(env, env_file, as_systemd=as_systemd):
        print(f"  note: {what}" + (f" ({fix})" if fix else ""), file=sys.stderr)


def run_daemon(cfg: Config) -> int:
    from diswoot import service

    # Everything imported so far lives as long as the process: out of the cyclic collector's
    # sight, its full collections stop re-walking ~700 modules' objects (shorter pauses).
    gc.collect()
    gc.freeze()
    try:
        trio.run(service.run, cfg)
    except BaseException as exc:  # classify: fatal (78), interrupt (0) or crash (1)
        fatal = find_fatal(exc)
        if fatal is not None:
            log.critical("%s", fatal)
            print(f"diswoot: {fatal}", file=sys.stderr)
            return EX_CONFIG
        if isinstance(exc, KeyboardInterrupt):
            return 0
        log.critical("diswoot crashed", exc_info=exc)
        return 1
    return 0


async def queue_cli(db_path: Path, action: str, ids: list[int]) -> int:
    from diswoot.bridge.jobs import RESCAN_SECONDS
    from diswoot.store import open_store
    from diswoot.store import queries as q

    async with open_store(db_path) as store:
        if action == "retry":
            jobs = await store.call(q.requeue_dead, time.time(), ids or None)
            print(f"re-queued {len(jobs)} dead-lettered job(s); a running daemon picks them up"
                  f" within {RESCAN_SECONDS:.0f} seconds (or at its next start)")
            return 0
        jobs = await store.call(q.list_jobs)
    print(format_jobs(jobs, now=time.time()))
    return 0


def format_jobs(jobs: Sequence[Any], *, now: float) -> str:
    if not jobs:
        return "no pending or dead-lettered work"
    lines = [f"{'id':>6}  {'queue':<9} {'state':<8} {'kind':<14} {'age':>8} {'tries':>5}  error"]
    for job in jobs:
        age = _age(now - job.created_at)
        error = (job.last_error or "").replace("\n", " ")[:80]
        lines.append(
            f"{job.id:>6}  {job.queue:<9} {job.state:<8} {job.kind:<14} {age:>8} "
            f"{job.attempts:>5}  {error}"
        )
    pending = sum(1 for j in jobs if j.state == "pending")
    dead = sum(1 for j in jobs if j.state == "dead")
    lines.append(f"{pending} pending, {dead} dead-lettered (retry them with `diswoot queue retry`)")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
