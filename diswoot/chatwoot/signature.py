"""Chatwoot webhook signatures (4.12+; chatwoot-api.md §1.2).

``X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "{X-Chatwoot-Timestamp}." + raw body)>``.
Always verify the raw request bytes, never a re-serialised body.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureResult(enum.Enum):
    """Outcome of :func:`verify`; the value is a short reason fit for logs."""

    OK = "ok"
    MISSING_TIMESTAMP = "missing X-Chatwoot-Timestamp header"
    MISSING_SIGNATURE = "missing X-Chatwoot-Signature header"
    BAD_TIMESTAMP = "X-Chatwoot-Timestamp is not a unix time in seconds"
    BAD_SIGNATURE = "signature does not match"
    STALE_TIMESTAMP = "timestamp outside the allowed window"

    @property
    def ok(self) -> bool:
        return self is SignatureResult.OK

    @property
    def reason(self) -> str:
        return self.value


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The header value Chatwoot sends: ``"sha256=" + lowercase hex digest``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    headers_timestamp: str | None,
    headers_signature: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: float = 300.0,
) -> SignatureResult:
    """Check a delivery's signature (constant time) and its timestamp window.

    ``now`` is the current unix time (``time.time()``); a timestamp further than ``tolerance``
    seconds from it, in either direction, is stale. The signature is checked before the window,
    so ``STALE_TIMESTAMP`` means "authentic but too old/new" (replay or clock skew). Header
    values are compared exactly as received (HTTP servers already strip surrounding spaces).
    """
    if not secret:
        raise ValueError("verify() needs the webhook secret")
    if not headers_timestamp:
        return SignatureResult.MISSING_TIMESTAMP
    if not headers_signature:
        return SignatureResult.MISSING_SIGNATURE
    timestamp = headers_timestamp
    if not _TIMESTAMP.fullmatch(timestamp):
        return SignatureResult.BAD_TIMESTAMP
    expected = sign(secret, timestamp, body).encode()
    received = headers_signature.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(expected, received):
        return SignatureResult.BAD_SIGNATURE
    if abs(now - int(timestamp)) > tolerance:
        return SignatureResult.STALE_TIMESTAMP
    return SignatureResult.OK


__all__ = ["SignatureResult", "sign", "verify"]
