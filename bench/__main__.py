"""``python -m bench``: run every scenario, print a table and one JSON line.

Two daemons run one after the other, each against fresh fakes:

* ``defaults`` - the shipped configuration (confirm reaction and greeting on);
* ``no-reaction`` - CONFIRM_EMOJI blank (inbound bursts only), to show what the inbound path
  does without the Discord reaction that each forwarded DM waits for in its lane.

``--quick`` runs only the first, with small sizes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from bench import scenarios
from bench.procstat import memory_kib
from bench.profile import profiled
from bench.report import json_line, table
from bench.world import World, open_world

LIGHT_RATE = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the real Diswoot daemon against the in-process fakes.",
    )
    parser.add_argument("--users", type=int, default=100, help="Discord users (default 100)")
    parser.add_argument(
        "--messages", type=int, default=10, help="DMs per user in the inbound burst (default 10)"
    )
    parser.add_argument(
        "--replies",
        type=int,
        default=300,
        help="agent replies per outbound scenario (default 300; keep it <= 4 x users so the "
        "per-channel 5/5 s bucket is not what limits)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=20, help="concurrent webhook POSTs (default 20)"
    )
    parser.add_argument(
        "--rate", type=float, default=100.0, help="DMs/s of the paced scenario (default 100)"
    )
    parser.add_argument(
        "--paced-seconds", type=float, default=5.0, help="length of each paced scenario (5)"
    )
    parser.add_argument(
        "--chatwoot-latency",
        type=float,
        default=0.05,
        help="seconds per Chatwoot call in the latency scenario (default 0.05)",
    )
    parser.add_argument(
        "--discord-latency",
        type=float,
        default=0.0,
        help="seconds per Discord REST call in every scenario (default 0)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes and only the shipped configuration (about 20 s), for a smoke run",
    )
    parser.add_argument(
        "--skip-no-reaction", action="store_true", help="run only the shipped configuration"
    )
    parser.add_argument("--log-dir", type=Path, help="keep the daemons' logs here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample each daemon with py-spy into DIR/<daemon>.txt (see python -m bench.profile)",
    )
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
    }


def _profile_path(args: argparse.Namespace, label: str) -> Path | None:
    if args.profile is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    return Path(args.profile) / f"{label}.txt"


def paced_shape(users: Sequence[str], total: float) -> tuple[Sequence[str], int]:
    """(senders, DMs each) for about ``total`` DMs spread over as many users as possible."""
    wanted = max(1, round(total))
    if wanted <= len(users):
        return users[:wanted], 1
    return users, round(wanted / len(users))


async def run_world(
    args: argparse.Namespace, label: str, prefix: str, **config: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """All scenarios against one daemon; (scenarios by column name, process figures)."""
    results: dict[str, dict[str, Any]] = {}
    wait = 20.0 if args.quick else 60.0
    log_dir = args.log_dir / label if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(f"[{label}] {text}", file=sys.stderr)

    async with open_world(
        discord_latency=args.discord_latency,
        log_dir=log_dir,
        stop_wait=1.0 if args.quick or prefix else 15.0,
        **config,
    ) as world, profiled(world.pid, _profile_path(args, label)):
        idle_rss, _ = memory_kib(world.pid)
        users = world.add_users(args.users)
        burst = args.messages if not prefix else max(1, args.messages // 2)
        say(f"inbound burst: {args.users} users x {burst} DMs")
        results[f"{prefix}in_burst"] = await scenarios.inbound(
            world, users, burst, tag="burst", receipt_wait=wait
        )
        paced = (("in_paced", args.rate), ("in_light", LIGHT_RATE)) if not prefix else ()
        for name, rate in paced:
            senders, per_user = paced_shape(users, rate * args.paced_seconds)
            say(f"paced inbound: {len(senders) * per_user} DMs offered at {rate:g}/s")
            results[f"{prefix}{name}"] = await scenarios.inbound(
                world, senders, per_user, tag=name, rate=rate, receipt_wait=wait
            )
        say(f"inbound burst with {args.chatwoot_latency * 1000:g} ms per Chatwoot call")
        world.chatwoot.latency = args.chatwoot_latency
        results[f"{prefix}in_cw_latency"] = await scenarios.inbound(
            world, users, max(1, args.messages // 2), tag="slow", receipt_wait=wait
        )
        world.chatwoot.latency = 0.0
        if not prefix:
            await outbound_scenarios(world, args, users, results, wait, label)
        rss_now, peak_rss = memory_kib(world.pid)
    figures = {
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "peak_rss_mb": round(peak_rss / 1024, 1),
        "final_rss_mb": round(rss_now / 1024, 1),
        "graceful_stop_seconds": world.stop.seconds,
        "killed_after_seconds": world.stop.wait if world.stop.killed else None,
    }
    return results, figures


async def outbound_scenarios(
    world: World,
    args: argparse.Namespace,
    users: Sequence[str],
    results: dict[str, dict[str, Any]],
    receipt_wait: float,
    label: str,
) -> None:
    conversations = scenarios.conversations_of(world, users)
    print(f"[{label}] outbound burst: {args.replies} replies", file=sys.stderr)
    results["out_burst"] = await scenarios.outbound(
        world,
        conversations,
        args.replies,
        args.concurrency,
        tag="burst",
        enforce_limits=False,
        receipt_wait=receipt_wait,
    )
    print(f"[{label}] outbound under enforced Discord limits", file=sys.stderr)
    results["out_limited"] = await scenarios.outbound(
        world,
        conversations,
        args.replies,
        args.concurrency,
        tag="limited",
        enforce_limits=True,
        receipt_wait=receipt_wait,
    )


def _verdict(measured: Any, target: str, met: bool) -> dict[str, Any]:
    return {"measured": measured, "target": target, "met": bool(met)}


def targets(results: dict[str, dict[str, Any]], peak_rss_mb: float) -> dict[str, Any]:
    """Issue 9's targets, judged on the shipped configuration."""
    burst, paced = results["in_burst"], results["in_paced"]
    slow, limited = results["in_cw_latency"], results["out_limited"]
    p99 = paced.get("p99_ms")
    return {
        "inbound burst DMs/s": _verdict(
            burst["rate_per_s"], ">= 1000", burst["rate_per_s"] >= 1000
        ),
        "inbound DMs/s with slow Chatwoot, order kept": _verdict(
            f"{slow['rate_per_s']} ({'ordered' if slow['order_kept'] else 'ORDER BROKEN'})",
            ">= 200, ordered",
            slow["rate_per_s"] >= 200 and slow["order_kept"],
        ),
        "outbound share of the global limit": _verdict(
            f"{limited['global_limit_fraction']:.0%}, {limited['responses_429']} x 429",
            ">= 90 %, zero 429",
            limited["global_limit_fraction"] >= 0.9 and limited["responses_429"] == 0,
        ),
        "steady-state Chatwoot calls per DM": _verdict(
            paced["chatwoot_calls_per_message"],
            "1 (+1 % for background probes)",
            paced["chatwoot_calls_per_message"] <= 1.01,
        ),
        "p99 latency at the paced rate (ms)": _verdict(p99, "<= 10", p99 is not None and p99 <= 10),
        "peak RSS (MB)": _verdict(peak_rss_mb, "<= 60", peak_rss_mb <= 60),
        "exactly once, nothing missing": _verdict(
            sum(r.get("duplicates", 0) + r.get("missing", 0) for r in results.values()),
            "0 duplicates + missing",
            all(r.get("duplicates", 0) == 0 and r.get("missing", 0) == 0 for r in results.values()),
        ),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    results, figures = await run_world(args, "defaults", "")
    memories = {"defaults": figures}
    if not args.skip_no_reaction:
        extra, memories["no-reaction"] = await run_world(
            args, "no-reaction", "nr_", confirm_emoji=""
        )
        results.update(extra)
    peak = max(m["peak_rss_mb"] for m in memories.values())
    summary: dict[str, Any] = {
        "daemon peak RSS MB (VmHWM)": peak,
        "daemon idle RSS MB": memories["defaults"]["idle_rss_mb"],
        "daemon CPU s per 1,000 inbound DMs (burst)": results["in_burst"]["daemon_cpu_s_per_1000"],
        "daemon CPU s per 1,000 replies (burst)": results["out_burst"]["daemon_cpu_s_per_1000"],
        f"inbound p99 ms at {LIGHT_RATE:g} DMs/s": results["in_light"]["p99_ms"],
        "daemon graceful stop seconds (SIGTERM -> exit)": figures["graceful_stop_seconds"],
        "benchmark wall seconds": round(time.perf_counter() - started, 1),
        "targets": targets(results, peak),
    }
    return {
        "bench": "diswoot",
        "machine": machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "daemons": memories,
        "scenarios": results,
        "summary": summary,
    }


def cli(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.users, args.messages = min(args.users, 60), min(args.messages, 2)
        args.replies, args.paced_seconds = min(args.replies, 100), min(args.paced_seconds, 1.5)
        args.skip_no_reaction = True
    payload = trio.run(main, args)
    print(table(payload["scenarios"], payload["summary"]))
    print(json_line(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
