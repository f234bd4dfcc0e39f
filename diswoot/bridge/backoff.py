"""Pure retry schedule: capped exponential backoff with symmetric jitter."""

from __future__ import annotations

import math
import random
from collections.abc import Callable


def retry_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The nominal delay is ``min(cap, base * 2 ** (attempt - 1))``; the result lies in
    ``[nominal * (1 - jitter), min(cap, nominal * (1 + jitter))]``. ``rand`` returns a float in
    ``[0, 1)`` (injectable for tests).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    if not (base > 0 and math.isfinite(base)):
        raise ValueError(f"base must be a positive finite number, got {base}")
    if not (cap >= base and math.isfinite(cap)):
        raise ValueError(f"cap must be finite and at least base, got {cap}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    # base * 2**(attempt-1) without overflow: past the cap the exponent no longer matters.
    doublings = math.log2(cap / base) + 1
    nominal = cap if attempt - 1 >= doublings else min(cap, math.ldexp(base, attempt - 1))
    r = min(max(rand(), 0.0), 1.0)
    return min(cap, nominal * (1.0 + jitter * (2.0 * r - 1.0)))


__all__ = ["retry_delay"]
