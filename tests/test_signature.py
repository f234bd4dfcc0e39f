"""Chatwoot webhook HMAC: sign/verify, header problems, replay window."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from diswoot.chatwoot.signature import SignatureResult, sign, verify

SECRET = "x8Rk2mQ9vT4wZp7sLb3nHc6d"  # 24-char base58, like Chatwoot's has_secure_token
NOW = 1781690400.0


def test_sign_matches_the_documented_formula() -> None:
    body = b'{"event":"message_created","content":"\\u003cb\\u003e"}'
    expected = hmac.new(SECRET.encode(), b"1781690400." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1781690400", body) == "sha256=" + expected
    assert expected == expected.lower()


def test_known_vector() -> None:
    # Independently computed: printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
    assert sign("secret", "1700000000", b"{}") == (
        "sha256=" + hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    )
    assert sign("secret", "1700000000", b"{}") != sign("secret", "1700000000", b"{} ")


def test_accepts_a_fresh_signed_body() -> None:
    body = b'{"id": 1}'
    signature = sign(SECRET, "1781690400", body)
    result = verify(SECRET, "1781690400", signature, body, now=NOW + 299)
    assert result is SignatureResult.OK
    assert result.ok


def test_body_only_signature_is_rejected() -> None:
    """Issue #13809: receivers that HMAC the body alone; the signed string includes the ts."""
    body = b'{"id": 1}'
    body_only = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify(SECRET, "1781690400", body_only, body, now=NOW) is SignatureResult.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("ts", "sig", "expected"),
    [
        (None, "sha256=00", SignatureResult.MISSING_TIMESTAMP),
        ("", "sha256=00", SignatureResult.MISSING_TIMESTAMP),
        ("1781690400", None, SignatureResult.MISSING_SIGNATURE),
        ("1781690400", "", SignatureResult.MISSING_SIGNATURE),
        ("abc", "sha256=00", SignatureResult.BAD_TIMESTAMP),
        ("1781690400.5", "sha256=00", SignatureResult.BAD_TIMESTAMP),
        ("-1781690400", "sha256=00", SignatureResult.BAD_TIMESTAMP),
        ("١٧٨١٦٩٠٤٠٠", "sha256=00", SignatureResult.BAD_TIMESTAMP),
        ("1781690400", "sha256=00", SignatureResult.BAD_SIGNATURE),
        ("1781690400", "sha256=ÿ", SignatureResult.BAD_SIGNATURE),
    ],
)
def test_rejections(ts: str | None, sig: str | None, expected: SignatureResult) -> None:
    result = verify(SECRET, ts, sig, b"{}", now=NOW)
    assert result is expected
    assert not result.ok
    assert result.reason


@pytest.mark.parametrize("skew", [-301.0, 301.0, -86400.0, 10**9])
def test_stale_or_future_timestamps(skew: float) -> None:
    body = b"{}"
    sig = sign(SECRET, "1781690400", body)
    assert verify(SECRET, "1781690400", sig, body, now=NOW + skew) is (
        SignatureResult.STALE_TIMESTAMP
    )


def test_tolerance_is_configurable_and_inclusive() -> None:
    sig = sign(SECRET, "1781690400", b"{}")
    assert verify(SECRET, "1781690400", sig, b"{}", now=NOW + 300).ok
    assert verify(SECRET, "1781690400", sig, b"{}", now=NOW + 60, tolerance=30) is (
        SignatureResult.STALE_TIMESTAMP
    )


def test_bad_signature_is_reported_before_staleness() -> None:
    assert verify(SECRET, "1", "sha256=00", b"{}", now=NOW) is SignatureResult.BAD_SIGNATURE


def test_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        verify("", "1781690400", "sha256=00", b"{}", now=NOW)


def test_uses_constant_time_comparison() -> None:
    import inspect

    import diswoot.chatwoot.signature as module

    assert "compare_digest" in inspect.getsource(module.verify)


timestamps = st.integers(min_value=0, max_value=10**11).map(str)


@given(secret=st.text(min_size=1), ts=timestamps, body=st.binary())
def test_accepts_what_we_sign(secret: str, ts: str, body: bytes) -> None:
    assert verify(secret, ts, sign(secret, ts, body), body, now=float(ts)).ok


@given(secret=st.text(min_size=1), ts=timestamps, body=st.binary(), other=st.binary())
def test_rejects_any_body_change(secret: str, ts: str, body: bytes, other: bytes) -> None:
    assume(other != body)
    result = verify(secret, ts, sign(secret, ts, body), other, now=float(ts))
    assert result is SignatureResult.BAD_SIGNATURE


@given(secret=st.text(min_size=1), ts=timestamps, body=st.binary(), delta=st.integers(-300, 300))
def test_rejects_any_timestamp_change(secret: str, ts: str, body: bytes, delta: int) -> None:
    assume(delta != 0 and int(ts) + delta >= 0)
    changed = str(int(ts) + delta)
    result = verify(secret, changed, sign(secret, ts, body), body, now=float(ts))
    assert result is SignatureResult.BAD_SIGNATURE


@given(
    secret=st.text(min_size=1),
    ts=timestamps,
    body=st.binary(),
    position=st.integers(min_value=0),
    replacement=st.characters(),
)
def test_rejects_any_signature_change(
    secret: str, ts: str, body: bytes, position: int, replacement: str
) -> None:
    good = sign(secret, ts, body)
    i = position % (len(good) + 1)
    for bad in (good[:i] + replacement + good[i + 1 :], good[:i] + replacement + good[i:]):
        assume(bad != good)
        assert verify(secret, ts, bad, body, now=float(ts)) is SignatureResult.BAD_SIGNATURE


@given(secret=st.text(min_size=1), other=st.text(min_size=1), ts=timestamps, body=st.binary())
def test_rejects_other_secrets(secret: str, other: str, ts: str, body: bytes) -> None:
    assume(secret != other)
    assert not verify(other, ts, sign(secret, ts, body), body, now=float(ts)).ok
