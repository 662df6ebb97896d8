"""HMAC signing and the authenticator's window and replay rules (no network)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from relayd.common.signing import sign
from relayd.edge import auth
from relayd.edge.auth import Authenticator

SECRET = b"s3cret"
NOW = 1_800_000_000


def test_signature_is_lowercase_hex_hmac_sha256_of_hub_and_timestamp() -> None:
    expected = hmac.new(SECRET, b"home:1800000000", hashlib.sha256).hexdigest()
    assert sign(SECRET, "home", NOW) == expected == expected.lower()


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert Authenticator("home", SECRET, 300).check("home", NOW, sign(SECRET, "home", NOW),
                                                    NOW) is None
    assert any(a == sign(SECRET, "home", NOW).encode() for a, _ in calls)


@pytest.mark.parametrize("skew", [-300, 300, 0])
def test_window_is_inclusive(skew: int) -> None:
    a = Authenticator("home", SECRET, 300)
    assert a.check("home", NOW + skew, sign(SECRET, "home", NOW + skew), NOW) is None


@pytest.mark.parametrize("skew", [-301, 301])
def test_outside_window_rejected(skew: int) -> None:
    a = Authenticator("home", SECRET, 300)
    reason = a.check("home", NOW + skew, sign(SECRET, "home", NOW + skew), NOW)
    assert reason == "timestamp outside the allowed window"


def test_replay_rejected_and_memory_expires_with_window() -> None:
    a = Authenticator("home", SECRET, 300)
    sig = sign(SECRET, "home", NOW)
    assert a.check("home", NOW, sig, NOW) is None
    assert a.check("home", NOW, sig, NOW + 10) == "replayed connect request"
    assert a.replay_memory_size() == 1
    # once the timestamp has left the window, the entry is forgotten (and the request is stale)
    assert a.check("home", NOW, sig, NOW + 301) == "timestamp outside the allowed window"
    assert a.replay_memory_size() == 0


def test_unknown_hub_rejected_even_with_matching_signature() -> None:
    a = Authenticator("home", SECRET, 300)
    assert a.check("other", NOW, sign(SECRET, "other", NOW), NOW) == "unknown hub_id"


def test_rejection_reasons_never_contain_the_secret_or_expected_signature() -> None:
    a = Authenticator("home", SECRET, 300)
    reason = a.check("home", NOW, "bad", NOW)
    assert reason == "invalid signature"
    assert SECRET.decode() not in reason and sign(SECRET, "home", NOW) not in reason


def test_replay_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "REPLAY_MEMORY_MAX", 5)
    a = Authenticator("home", SECRET, 300)
    for i in range(20):  # 20 distinct accepted requests inside the window
        assert a.check("home", NOW - i, sign(SECRET, "home", NOW - i), NOW) is None
    assert a.replay_memory_size() == 5
