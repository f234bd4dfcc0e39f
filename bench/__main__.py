"""``python -m bench``: the real daemon against the fakes; a table, the targets, one JSON line.

Each run starts two daemons (``python -m diswoot`` child processes), one after the other, each
against fresh in-process fakes over loopback:

* ``quiet`` - Chatwoot sends no webhook for the DMs it receives.  Steady traffic first (20 DMs/s,
  then 20 replies/s: latency, and the steady RSS peak), then a burst of ``users x messages``
  DMs, then ``replies`` agent replies (20 webhooks at a time), 500 replies to 100 users
  under Discord's enforced limits, and the ``replies`` burst again with Chatwoot not echoing
  the delivery receipts (``out_burst_quiet``: issue 13's shape, one webhook per reply);
* ``echo`` - production shape: Chatwoot echoes every forwarded DM as a webhook on a connection
  of its own, as a real Chatwoot does; the same burst.

``--runs N`` repeats everything and reports the median (and range) of every figure; ``--floor``
also measures what the libraries alone cost (:mod:`bench.floor`), and the daemon's CPU per
message as a ratio to that floor for the same work.  ``--quick`` is a small smoke run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from bench import floor as floor_mod
from bench import scenarios
from bench.procstat import memory_kib
from bench.profile import profiled
from bench.report import json_line, table, targets
from bench.world import open_world


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the real Diswoot daemon against the in-process fakes.",
    )
    add = parser.add_argument
    add("--users", type=int, default=100, help="Discord users (default 100)")
    add("--messages", type=int, default=10, help="DMs per user in the bursts (default 10)")
    add("--replies", type=int, default=1000, help="agent replies in the burst (default 1000)")
    add("--limited-replies", type=int, default=500,
        help="replies under enforced Discord limits (default 500)")
    add("--concurrency", type=int, default=20, help="concurrent webhook POSTs (default 20)")
    add("--steady-rate", type=float, default=20.0, help="DMs or replies/s, steady (default 20)")
    add("--steady-seconds", type=float, default=5.0, help="length of each steady scenario")
    add("--discord-latency", type=float, default=0.0, help="seconds per Discord REST call")
    add("--runs", type=int, default=3, help="repeat everything; report medians (default 3)")
    add("--floor", action="store_true", help="also measure the libraries alone (bench.floor)")
    add("--quick", action="store_true", help="small sizes, one run (about a minute)")
    add("--log-dir", type=Path, help="keep the daemons' logs here")
    add("--profile", type=Path,
        help="sample each daemon with py-spy into DIR/<daemon>.txt (see python -m bench.profile)")
    return parser


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def _say(label: str, text: str) -> None:
    print(f"[{label}] {text}", file=sys.stderr)


def _paths(args: argparse.Namespace, label: str) -> tuple[Path | None, Path | None]:
    """(log dir, profile file) of one daemon."""
    log_dir = profile = None
    if args.log_dir:
        log_dir = args.log_dir / label
        log_dir.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile = args.profile / f"{label}.txt"
    return log_dir, profile


async def quiet_world(args: argparse.Namespace, label: str) -> dict[str, dict[str, Any]]:
    """Steady traffic, the burst and the outbound scenarios, Chatwoot echoing nothing."""
    results: dict[str, dict[str, Any]] = {}
    wait = 60.0
    log_dir, profile = _paths(args, label)
    async with open_world(
        discord_latency=args.discord_latency, log_dir=log_dir, stop_wait=15.0
    ) as world, profiled(world.pid, profile):
        world.chatwoot.echo_incoming = False
        idle_rss, _ = memory_kib(world.pid)
        users = world.add_users(args.users)
        # every user's first DM creates contact + conversation: not the steady state
        _say(label, f"warm-up: one DM from each of {len(users)} users")
        await scenarios.inbound(world, users, 1, tag="warmup", receipt_wait=wait)
        steady = round(args.steady_rate * args.steady_seconds)
        _say(label, f"steady inbound: {steady} DMs at {args.steady_rate:g}/s")
        senders, per_user = _spread(users, steady)
        results["in_steady"] = await scenarios.inbound(
            world, senders, per_user, tag="steady", rate=args.steady_rate, receipt_wait=wait
        )
        conversations = scenarios.conversations_of(world, users)
        _say(label, f"steady outbound: {steady} replies at {args.steady_rate:g}/s")
        results["out_steady"] = await scenarios.outbound(
            world, conversations, steady, args.concurrency, tag="steady",
            enforce_limits=True, receipt_wait=wait, rate=args.steady_rate,
        )
        _, steady_peak = memory_kib(world.pid)
        _say(label, f"inbound burst: {len(users)} users x {args.messages} DMs")
        results["in_burst"] = await scenarios.inbound(
            world, users, args.messages, tag="burst", receipt_wait=wait
        )
        _, burst_peak = memory_kib(world.pid)
        _say(label, f"outbound burst: {args.replies} replies, {args.concurrency} at a time")
        results["out_burst"] = await scenarios.outbound(
            world, conversations, args.replies, args.concurrency, tag="burst",
            enforce_limits=True, receipt_wait=wait * 2,
        )
        _say(label, f"outbound under Discord's limits: {args.limited_replies} replies")
        results["out_limited"] = await scenarios.outbound(
            world, conversations, args.limited_replies, args.concurrency, tag="limited",
            enforce_limits=True, receipt_wait=wait * 2,
        )
        # issue 13's reply figure counts the webhook, the Discord POST and the receipt PATCH:
        # the same burst without the receipt's message_updated echo
        _say(label, f"outbound burst, receipts not echoed: {args.replies} replies")
        world.chatwoot.echo_receipts = False
        results["out_burst_quiet"] = await scenarios.outbound(
            world, conversations, args.replies, args.concurrency, tag="quiet",
            enforce_limits=True, receipt_wait=wait * 2,
        )
        world.chatwoot.echo_receipts = True
        _, final_peak = memory_kib(world.pid)
    results["process"] = {
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "steady_peak_rss_mb": round(steady_peak / 1024, 1),
        "burst_peak_rss_mb": round(burst_peak / 1024, 1),
        "peak_rss_mb": round(final_peak / 1024, 1),
        "graceful_stop_seconds": world.stop.seconds,
    }
    return results


async def echo_world(args: argparse.Namespace, label: str) -> dict[str, dict[str, Any]]:
    """Production shape: every forwarded DM comes back as a webhook, one connection each."""
    log_dir, profile = _paths(args, label)
    async with open_world(
        discord_latency=args.discord_latency, log_dir=log_dir, stop_wait=15.0
    ) as world, profiled(world.pid, profile):
        users = world.add_users(args.users)
        await scenarios.inbound(world, users, 1, tag="warmup", receipt_wait=60.0)
        _say(label, f"inbound burst with echo webhooks: {len(users)} x {args.messages} DMs")
        burst = await scenarios.inbound(
            world, users, args.messages, tag="echo", receipt_wait=60.0
        )
        _, peak = memory_kib(world.pid)
    burst["peak_rss_mb"] = round(peak / 1024, 1)
    return {"in_burst_echo": burst}


def _spread(users: Sequence[str], total: int) -> tuple[Sequence[str], int]:
    """(senders, DMs each) for about ``total`` DMs over as many users as possible."""
    if total <= len(users):
        return users[: max(1, total)], 1
    return users, round(total / len(users))


def median_of(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each numeric figure's median over the runs (``<name>_range`` keeps min and max)."""
    merged: dict[str, dict[str, Any]] = {}
    for scenario in runs[0]:
        rows = [run[scenario] for run in runs if scenario in run]
        out: dict[str, Any] = {}
        for key, first in rows[0].items():
            values = [row.get(key) for row in rows]
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if len(numbers) == len(values) and numbers:
                out[key] = statistics.median(numbers)
                if len(numbers) > 1 and min(numbers) != max(numbers):
                    out[f"{key}_range"] = [min(numbers), max(numbers)]
            elif all(isinstance(v, bool) for v in values):
                out[key] = all(values)
            else:
                out[key] = first
        merged[scenario] = out
    return merged


async def one_run(args: argparse.Namespace, index: int) -> dict[str, dict[str, Any]]:
    results = await quiet_world(args, f"quiet-{index}")
    results.update(await echo_world(args, f"echo-{index}"))
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    floor = await trio.to_thread.run_sync(floor_mod.measure) if args.floor else None
    runs = [await one_run(args, index) for index in range(args.runs)]
    results = median_of(runs)
    return {
        "bench": "diswoot",
        "machine": machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "floor": floor,
        "scenarios": results,
        "runs": runs,
        "targets": targets(results, floor),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def cli(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.users, args.messages = min(args.users, 50), min(args.messages, 4)
        args.replies, args.limited_replies = min(args.replies, 200), min(args.limited_replies, 150)
        args.steady_seconds, args.runs = min(args.steady_seconds, 2.0), 1
    payload = trio.run(main, args)
    print(table(payload))
    print(json_line(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
