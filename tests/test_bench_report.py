"""The benchmark's ratio to the library floor: which floor each scenario is divided by."""

from __future__ import annotations

from bench.report import with_floor

FLOOR = {
    "httpx_ms": 1.0,
    "quart_new_connection_ms": 2.0,
    "httpx_paced_ms": 3.0,
    "quart_new_connection_paced_ms": 4.0,
}


def test_a_burst_is_divided_by_the_back_to_back_floor_only() -> None:
    row = with_floor(
        {
            "burst": {
                "daemon_cpu_ms_per_message": 6.0,
                "chatwoot_calls_per_message": 1.0,
                "discord_calls_per_message": 1.0,
                "webhooks_per_message": 1.0,
            }
        },
        FLOOR,
    )["burst"]
    assert row["floor_ms_per_message"] == 4.0  # 2 calls x 1.0 + 1 webhook x 2.0
    assert row["overhead_ratio"] == 1.5
    assert "paced_floor_ms_per_message" not in row


def test_a_steady_scenario_is_also_divided_by_the_floor_of_requests_from_idle() -> None:
    row = with_floor(
        {
            "steady": {
                "offered_rate_per_s": 20.0,
                "daemon_cpu_ms_per_message": 20.0,
                "chatwoot_calls_per_message": 1.0,
                "discord_calls_per_message": 1.0,
                "webhooks_per_message": 1.0,
            }
        },
        FLOOR,
    )["steady"]
    assert row["overhead_ratio"] == 5.0
    assert row["paced_floor_ms_per_message"] == 10.0  # 2 x 3.0 + 1 x 4.0
    assert row["paced_overhead_ratio"] == 2.0


def test_a_floor_line_without_the_paced_figures_still_gives_the_burst_ratio() -> None:
    older = {"httpx_ms": 1.0, "quart_new_connection_ms": 2.0}
    row = with_floor(
        {
            "steady": {
                "offered_rate_per_s": 20.0,
                "daemon_cpu_ms_per_message": 3.0,
                "chatwoot_calls_per_message": 1.0,
                "discord_calls_per_message": 1.0,
            }
        },
        older,
    )["steady"]
    assert row["overhead_ratio"] == 1.5
    assert "paced_overhead_ratio" not in row
