"""Bounds of the pure retry schedule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diswoot.bridge.backoff import retry_delay


def test_first_attempt_is_about_base() -> None:
    assert retry_delay(1, rand=lambda: 0.5) == 1.0
    assert retry_delay(1, base=2.0, rand=lambda: 0.5) == 2.0
    assert retry_delay(1, rand=lambda: 0.0) == pytest.approx(0.8)
    assert retry_delay(1, rand=lambda: 0.999999) == pytest.approx(1.2, abs=1e-5)


def test_doubles_until_cap() -> None:
    got = [retry_delay(n, rand=lambda: 0.5) for n in range(1, 12)]
    assert got == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_never_exceeds_cap_even_with_jitter() -> None:
    assert retry_delay(20, rand=lambda: 0.999) == 300.0
    assert retry_delay(20, rand=lambda: 0.0) == pytest.approx(240.0)


def test_huge_attempt_does_not_overflow() -> None:
    assert retry_delay(10**9, rand=lambda: 0.5) == 300.0


def test_no_jitter_is_deterministic() -> None:
    assert retry_delay(3, jitter=0.0, rand=lambda: 0.123) == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"attempt": 1, "base": 0.0},
        {"attempt": 1, "base": -1.0},
        {"attempt": 1, "cap": 0.5},
        {"attempt": 1, "jitter": 1.5},
        {"attempt": 1, "jitter": -0.1},
        {"attempt": 1, "cap": math.inf},
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    options = {"base": 1.0, "cap": 300.0, "jitter": 0.2} | kwargs
    with pytest.raises(ValueError):
        retry_delay(
            int(options["attempt"]),
            base=options["base"],
            cap=options["cap"],
            jitter=options["jitter"],
        )


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=100.0),
    extra=st.floats(min_value=0.0, max_value=10_000.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_bounds(attempt: int, base: float, extra: float, jitter: float, r: float) -> None:
    cap = base + extra
    delay = retry_delay(attempt, base=base, cap=cap, jitter=jitter, rand=lambda: r)
    nominal = min(cap, base * 2.0 ** min(attempt - 1, 60))
    assert 0.0 <= delay <= cap
    assert nominal * (1 - jitter) * (1 - 1e-9) <= delay <= nominal * (1 + jitter) * (1 + 1e-9)


@given(st.integers(min_value=1, max_value=60))
def test_monotone_without_jitter(attempt: int) -> None:
    assert retry_delay(attempt, jitter=0) <= retry_delay(attempt + 1, jitter=0)
