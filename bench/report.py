"""Percentiles, the readable table and the JSON line."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.floor import floor_of_work


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds."""
    summary: dict[str, float | None] = {}
    for name, pct in (("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0), ("max_ms", 100.0)):
        value = percentile(seconds, pct)
        summary[name] = None if value is None else round(value * 1000, 2)
    return summary


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


# (metric key, row label) - what the table shows, in order.
TABLE_ROWS: list[tuple[str, str]] = [
    ("messages", "messages"),
    ("offered_rate_per_s", "offered messages/s"),
    ("rate_per_s", "messages/s"),
    ("p50_ms", "latency p50 ms"),
    ("p95_ms", "latency p95 ms"),
    ("p99_ms", "latency p99 ms"),
    ("max_ms", "latency max ms"),
    ("order_kept", "per-user order kept"),
    ("duplicates", "duplicates"),
    ("missing", "missing"),
    ("chatwoot_calls_per_message", "Chatwoot calls/message"),
    ("discord_calls_per_message", "Discord calls/message"),
    ("webhooks_per_message", "webhooks in/message"),
    ("store_transactions_per_message", "store transactions/message"),
    ("discord_req_per_s", "Discord req/s"),
    ("global_limit_fraction", "fraction of 50/s limit"),
    ("responses_429", "429 responses"),
    ("bucket_overruns", "bucket overruns seen by fake"),
    ("daemon_cpu_ms_per_message", "daemon CPU ms/message"),
    ("floor_ms_per_message", "library floor ms/message"),
    ("overhead_ratio", "daemon CPU / floor"),
    ("paced_floor_ms_per_message", "floor, each request from idle ms/msg"),
    ("paced_overhead_ratio", "daemon CPU / that floor"),
    ("drained_daemon_cpu_ms_per_message", "... until drained: CPU ms/message"),
    ("drained_discord_calls_per_message", "... until drained: Discord calls/msg"),
    ("drained_overhead_ratio", "... until drained: CPU / floor"),
    ("daemon_cpu_util", "daemon CPU utilisation"),
    ("bench_cpu_ms_per_message", "fakes+driver CPU ms/message"),
    ("peak_rss_mb", "daemon peak RSS MB"),
]


def with_floor(
    results: Mapping[str, Mapping[str, Any]], floor: Mapping[str, float] | None
) -> dict[str, dict[str, Any]]:
    """Each scenario plus the libraries' floor for the work it did, and the ratio to it.

    The work is what the fakes counted per message: outgoing HTTP calls (httpx) and
    webhooks received (each on a connection of its own, as Chatwoot sends them).  A steady
    scenario also gets the paced floor, each request from an idle loop as its messages are.
    """
    out = {name: dict(row) for name, row in results.items()}
    if floor is None:
        return out
    for row in out.values():
        for prefix in ("", "drained_"):
            cpu = row.get(f"{prefix}daemon_cpu_ms_per_message")
            if cpu is None:
                continue
            calls = row.get("chatwoot_calls_per_message", 0) + row.get(
                f"{prefix}discord_calls_per_message", 0
            )
            webhooks = row.get(f"{prefix}webhooks_per_message", 0)
            kinds = [("", False)]
            if not prefix and row.get("offered_rate_per_s"):
                kinds.append(("paced_", True))
            for kind, paced in kinds:
                ms = floor_of_work(floor, requests=calls, webhooks=webhooks, paced=paced)
                if ms is None:
                    continue
                row[f"{prefix}{kind}floor_ms_per_message"] = round(ms, 3)
                if ms > 0:
                    row[f"{prefix}{kind}overhead_ratio"] = round(cpu / ms, 2)
    return out


def table(payload: Mapping[str, Any]) -> str:
    """The scenarios side by side (medians of the runs), the floor, the targets."""
    scenarios = with_floor(payload["scenarios"], payload.get("floor"))
    process = scenarios.pop("process", {})
    names = list(scenarios)
    label_width = max(len(label) for _, label in TABLE_ROWS) + 2
    widths = [max(12, len(name) + 2) for name in names]
    header = "".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
    lines = ["".ljust(label_width) + header]
    for key, label in TABLE_ROWS:
        cells = [scenarios[n].get(key) for n in names]
        if all(c is None for c in cells):
            continue
        row = label.ljust(label_width)
        row += "".join(_cell(c).rjust(w) for c, w in zip(cells, widths, strict=True))
        lines.append(row)
    lines.append("")
    for key, value in process.items():
        if not key.endswith("_range"):
            lines.append(f"{key}: {_cell(value)}")
    if payload.get("floor"):
        lines.append(
            "library floor (CPU ms per request): "
            + ", ".join(f"{k.removesuffix('_ms')} {v:.3f}" for k, v in payload["floor"].items())
        )
    runs = len(payload.get("runs") or [])
    lines.append(f"medians of {runs} run(s); wall {payload.get('wall_seconds')} s")
    lines.append("")
    lines.append("targets (issue 13):")
    for name, verdict in payload["targets"].items():
        mark = "PASS" if verdict["met"] else "FAIL"
        lines.append(f"  [{mark}] {name}: {verdict['measured']} (target {verdict['target']})")
    return "\n".join(lines)


def _verdict(measured: Any, target: str, met: bool) -> dict[str, Any]:
    return {"measured": measured, "target": target, "met": bool(met)}


def targets(
    results: Mapping[str, Mapping[str, Any]], floor: Mapping[str, float] | None
) -> dict[str, Any]:
    """Issue 13's targets, judged on the medians."""
    burst, echo = results["in_burst"], results["in_burst_echo"]
    out_burst, limited = results["out_burst"], results["out_limited"]
    out_quiet = results.get("out_burst_quiet", out_burst)  # older JSON lines lack it
    steady_in, steady_out = results["in_steady"], results["out_steady"]
    process = results["process"]

    def at_most(value: Any, limit: float) -> bool:
        return value is not None and value <= limit

    verdicts = {
        "inbound burst DMs/s": _verdict(burst["rate_per_s"], ">= 400", burst["rate_per_s"] >= 400),
        "inbound burst p99 (ms)": _verdict(
            burst["p99_ms"], "<= 2500", at_most(burst["p99_ms"], 2500)
        ),
        "daemon CPU ms per DM, burst": _verdict(
            burst["daemon_cpu_ms_per_message"],
            "<= 2.0",
            at_most(burst["daemon_cpu_ms_per_message"], 2.0),
        ),
        "daemon CPU ms per DM, burst with echo webhooks": _verdict(
            echo["daemon_cpu_ms_per_message"],
            "<= 4.0",
            at_most(echo["daemon_cpu_ms_per_message"], 4.0),
        ),
        "daemon CPU ms per delivered reply (webhook, Discord POST, receipt PATCH)": _verdict(
            out_quiet["daemon_cpu_ms_per_message"],
            "<= 4.5",
            at_most(out_quiet["daemon_cpu_ms_per_message"], 4.5),
        ),
        "... and with the receipt's message_updated echo": _verdict(
            out_burst["daemon_cpu_ms_per_message"], "reported", True
        ),
        "steady DMs: p99 (ms)": _verdict(
            steady_in["p99_ms"], "<= 5", at_most(steady_in["p99_ms"], 5)
        ),
        "steady replies: p99 (ms)": _verdict(
            steady_out["p99_ms"], "<= 5", at_most(steady_out["p99_ms"], 5)
        ),
        "Discord req/s under its limits, 429s": _verdict(
            f"{limited['discord_req_per_s']} req/s, {limited['responses_429']} x 429",
            ">= 45 req/s, 0 x 429",
            limited["discord_req_per_s"] >= 45 and limited["responses_429"] == 0,
        ),
        "Chatwoot calls per DM, steady": _verdict(
            steady_in["chatwoot_calls_per_message"],
            "1",
            at_most(steady_in["chatwoot_calls_per_message"], 1.0),
        ),
        "peak RSS MB: burst / steady": _verdict(
            f"{process['burst_peak_rss_mb']} / {process['steady_peak_rss_mb']}",
            "<= 60 both",
            process["burst_peak_rss_mb"] <= 60 and process["steady_peak_rss_mb"] <= 60,
        ),
        "exactly once, in order": _verdict(
            sum(r.get("duplicates", 0) + r.get("missing", 0) for r in results.values()),
            "0 duplicates + missing, order kept",
            all(
                r.get("duplicates", 0) == 0
                and r.get("missing", 0) == 0
                and r.get("order_kept", True)
                for r in results.values()
            ),
        ),
    }
    if floor is not None:
        rows = with_floor(results, floor)
        verdicts["overhead over the library floor, burst"] = _verdict(
            rows["in_burst"].get("overhead_ratio"), "reported", True
        )
    return verdicts


def json_line(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=False)
