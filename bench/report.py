"""Percentiles, the readable table and the JSON line."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


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


# (scenario key, row label, metric key) - what the table shows, in order.
TABLE_ROWS: list[tuple[str, str]] = [
    ("messages", "messages"),
    ("seconds", "wall seconds"),
    ("rate_per_s", "messages/s"),
    ("p50_ms", "latency p50 ms"),
    ("p95_ms", "latency p95 ms"),
    ("p99_ms", "latency p99 ms"),
    ("max_ms", "latency max ms"),
    ("order_kept", "per-user order kept"),
    ("duplicates", "duplicates"),
    ("missing", "missing"),
    ("conversations_created", "conversations created"),
    ("chatwoot_calls_per_message", "Chatwoot calls/message"),
    ("discord_calls_per_message", "Discord calls/message"),
    ("webhooks_per_message", "Chatwoot webhooks in/message"),
    ("discord_req_per_s", "Discord req/s"),
    ("global_limit_fraction", "fraction of 50/s limit"),
    ("responses_429", "429 responses"),
    ("bucket_overruns", "bucket overruns seen by fake"),
    ("drain_seconds", "queues drained after (s)"),
    ("daemon_cpu_s_per_1000", "daemon CPU s / 1,000 msgs"),
    ("daemon_cpu_util", "daemon CPU utilisation"),
    ("bench_cpu_util", "fakes+driver CPU utilisation"),
    ("bench_cpu_ms_per_message", "fakes+driver CPU ms/message"),
]


def table(scenarios: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """The scenarios side by side, then the process-wide figures and the target verdicts."""
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
    for key, value in summary.items():
        if key == "targets":
            continue
        lines.append(f"{key}: {_cell(value)}")
    targets = summary.get("targets") or {}
    if targets:
        lines.append("")
        lines.append("targets (issue 9):")
        for name, verdict in targets.items():
            mark = "PASS" if verdict["met"] else "FAIL"
            lines.append(f"  [{mark}] {name}: {verdict['measured']} (target {verdict['target']})")
    return "\n".join(lines)


def json_line(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=False)
