"""Sender verification, scheme by scheme, against the vectors the providers publish.

Each scheme accepts its documented vector and refuses a tampered body, a wrong secret and
(where a timestamp is signed) one outside the tolerance; a second secret is accepted too
(rotation). Verifiers are built from config, as the daemon builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from relayd.edge.config import parse_config
from relayd.edge.verify import REASONS, Verifier, build_verifier

WRONG_SECRET = "not-the-secret"


def verifier(scheme: str, *secrets: str, **keys: Any) -> Verifier:
    """The verifier an endpoint with ``verify = scheme`` gets (secrets: one per line)."""
    raw = {"hub": {"secret_file": ""},
           "endpoints": [{"id": "e", "destination_url": "http://127.0.0.1:9/e",
                          "verify": scheme, "secret_env": "ENDPOINT_SECRET", **keys}]}
    config = parse_config(raw, environ={"RELAYD_HUB_SECRET": "hub",
                                        "ENDPOINT_SECRET": "\n".join(secrets)})
    spec = config.endpoints[0].verify
    assert spec is not None
    return build_verifier(spec)


def check(v: Verifier, headers: Sequence[tuple[str, str]], body: bytes, now: float = 0.0,
          query: str = "") -> str | None:
    reason = v.verify(headers, query, body, now)
    assert reason is None or reason in REASONS
    return reason


# --- github ------------------------------------------------------------------------------
# docs.github.com, "Validating webhook deliveries", section "Testing the webhook payload
# validation" (github/docs: content/webhooks/using-webhooks/validating-webhook-deliveries.md).
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_accepts_the_documented_vector_and_refuses_forgeries() -> None:
    good = [("x-hub-signature-256", GITHUB_SIGNATURE)]
    assert check(verifier("github", GITHUB_SECRET), good, GITHUB_BODY) is None
    assert check(verifier("github", GITHUB_SECRET), good, b"Hello, World?") \
        == "signature mismatch"
    assert check(verifier("github", WRONG_SECRET), good, GITHUB_BODY) == "signature mismatch"
    assert check(verifier("github", GITHUB_SECRET), [], GITHUB_BODY) == "missing signature"
    # the SHA-1 header GitHub also sends is not enough, nor a signature without its prefix
    assert check(verifier("github", GITHUB_SECRET), [("x-hub-signature", "sha1=00")],
                 GITHUB_BODY) == "missing signature"
    assert check(verifier("github", GITHUB_SECRET),
                 [("x-hub-signature-256", GITHUB_SIGNATURE.removeprefix("sha256="))],
                 GITHUB_BODY) == "malformed signature"
    assert check(verifier("github", GITHUB_SECRET), good * 2, GITHUB_BODY) \
        == "malformed signature"


def test_github_accepts_either_of_two_secrets_during_rotation() -> None:
    v = verifier("github", "the-new-secret", GITHUB_SECRET)
    assert check(v, [("x-hub-signature-256", GITHUB_SIGNATURE)], GITHUB_BODY) is None


# --- hmac-sha256 (generic) ---------------------------------------------------------------
# GitHub's vector above, configured by hand; and its digest in base64, as senders such as
# Shopify put it (X-Shopify-Hmac-Sha256, no prefix).
GITHUB_DIGEST_BASE64 = "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc="


def test_generic_hmac_with_prefix_and_hex_matches_github() -> None:
    v = verifier("hmac-sha256", GITHUB_SECRET, header="X-Hub-Signature-256", prefix="sha256=")
    assert check(v, [("x-hub-signature-256", GITHUB_SIGNATURE)], GITHUB_BODY) is None
    assert check(v, [("x-hub-signature-256", GITHUB_SIGNATURE)], GITHUB_BODY + b" ") \
        == "signature mismatch"


def test_generic_hmac_in_base64() -> None:
    v = verifier("hmac-sha256", GITHUB_SECRET, header="X-Shopify-Hmac-Sha256",
                 encoding="base64")
    good = [("x-shopify-hmac-sha256", GITHUB_DIGEST_BASE64)]
    assert check(v, good, GITHUB_BODY) is None
    assert check(v, good, b"Hello, World") == "signature mismatch"
    assert check(verifier("hmac-sha256", WRONG_SECRET, header="X-Shopify-Hmac-Sha256",
                          encoding="base64"), good, GITHUB_BODY) == "signature mismatch"
    assert check(v, [("x-shopify-hmac-sha256", "not base64!")], GITHUB_BODY) \
        == "malformed signature"


# --- stripe ------------------------------------------------------------------------------
# Stripe publishes the algorithm ("Check the webhook signatures", verifying manually:
# HMAC-SHA256 keyed with the signing secret over "{t}.{payload}", hex, in v1) but no
# vector with its secret. This one takes stripe-python's test fixtures (tests/test_webhook.py:
# DUMMY_WEBHOOK_SECRET, DUMMY_WEBHOOK_PAYLOAD) and the timestamp of Stripe's documented
# example header (t=1492774577); stripe-python 16.1.0's WebhookSignature.verify_header
# accepts the header below for that payload and secret (checked when this test was written).
STRIPE_SECRET = "whsec_test_secret"
STRIPE_BODY = (b'{\n  "id": "evt_test_webhook",\n  "object": "event",\n'
               b'  "data": { "object": { "id": "rdr_123", "object": "terminal.reader" } }\n}')
STRIPE_T = 1492774577
STRIPE_V1 = "d21d91b425674689e03346536b8fec6384a8721d43ebe269a1689a3ad22cba9c"
STRIPE_HEADER = f"t={STRIPE_T},v1={STRIPE_V1}"


def stripe(header: str) -> list[tuple[str, str]]:
    return [("stripe-signature", header)]


def test_stripe_accepts_the_vector_and_refuses_forgeries() -> None:
    v = verifier("stripe", STRIPE_SECRET)
    assert check(v, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T) is None
    assert check(v, stripe(STRIPE_HEADER), STRIPE_BODY.replace(b"rdr_123", b"rdr_124"),
                 now=STRIPE_T) == "signature mismatch"
    assert check(verifier("stripe", WRONG_SECRET), stripe(STRIPE_HEADER), STRIPE_BODY,
                 now=STRIPE_T) == "signature mismatch"
    # the timestamp is signed: moving it breaks the signature
    assert check(v, stripe(f"t={STRIPE_T + 1},v1={STRIPE_V1}"), STRIPE_BODY,
                 now=STRIPE_T) == "signature mismatch"
    assert check(v, stripe(f"v1={STRIPE_V1}"), STRIPE_BODY, now=STRIPE_T) \
        == "malformed signature"
    assert check(v, [], STRIPE_BODY, now=STRIPE_T) == "missing signature"


def test_stripe_refuses_a_timestamp_older_than_300s_by_default_or_the_tolerance() -> None:
    v = verifier("stripe", STRIPE_SECRET)
    assert check(v, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T + 300) is None
    assert check(v, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T + 301) \
        == "timestamp outside tolerance"
    assert check(v, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T - 301) \
        == "timestamp outside tolerance"
    short = verifier("stripe", STRIPE_SECRET, tolerance=10)
    assert check(short, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T + 10) is None
    assert check(short, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T + 11) \
        == "timestamp outside tolerance"


def test_stripe_takes_any_of_several_v1_and_ignores_other_schemes() -> None:
    v = verifier("stripe", STRIPE_SECRET)
    # Stripe rolling a secret sends one v1 per secret; a v1 that is not hex is skipped
    several = f"t={STRIPE_T},v1={'0' * 64},v1=bad_signature,v1={STRIPE_V1},v0=00"
    assert check(v, stripe(several), STRIPE_BODY, now=STRIPE_T) is None
    # the test-mode v0 scheme is never enough (downgrade)
    assert check(v, stripe(f"t={STRIPE_T},v0={STRIPE_V1}"), STRIPE_BODY, now=STRIPE_T) \
        == "signature mismatch"
    rotated = verifier("stripe", "whsec_the_new_one", STRIPE_SECRET)
    assert check(rotated, stripe(STRIPE_HEADER), STRIPE_BODY, now=STRIPE_T) is None


# --- standard-webhooks (and Svix) --------------------------------------------------------
# standard-webhooks/standard-webhooks (commit b2fa7b8), libraries/python/tests/
# test_webhooks.py test_sign_function (the same vector is libraries/go/webhook_test.go
# TestWebhookSign): secret, id, timestamp and payload below sign to this v1 signature.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_T = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def sw(signature: str = SW_SIGNATURE, msg_id: str = SW_ID, t: int = SW_T,
       prefix: str = "webhook-") -> list[tuple[str, str]]:
    return [(f"{prefix}id", msg_id), (f"{prefix}timestamp", str(t)),
            (f"{prefix}signature", signature)]


def test_standard_webhooks_accepts_the_spec_vector_and_refuses_forgeries() -> None:
    v = verifier("standard-webhooks", SW_SECRET)
    assert check(v, sw(), SW_BODY, now=SW_T) is None
    assert check(v, sw(), b'{"test": 2432232315}', now=SW_T) == "signature mismatch"
    assert check(verifier("standard-webhooks", "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"),
                 sw(), SW_BODY, now=SW_T) == "signature mismatch"
    # id and timestamp are signed too
    assert check(v, sw(msg_id="msg_other"), SW_BODY, now=SW_T) == "signature mismatch"
    assert check(v, sw()[1:], SW_BODY, now=SW_T) == "missing signature"
    assert check(v, sw(signature="v1a,AAAA"), SW_BODY, now=SW_T) == "malformed signature"


def test_standard_webhooks_refuses_a_stale_timestamp() -> None:
    v = verifier("standard-webhooks", SW_SECRET)
    assert check(v, sw(), SW_BODY, now=SW_T + 300) is None
    assert check(v, sw(), SW_BODY, now=SW_T + 301) == "timestamp outside tolerance"
    assert check(v, sw(), SW_BODY, now=SW_T - 301) == "timestamp outside tolerance"
    assert check(verifier("standard-webhooks", SW_SECRET, tolerance=60), sw(), SW_BODY,
                 now=SW_T + 61) == "timestamp outside tolerance"


def test_standard_webhooks_signature_list_svix_headers_and_rotation() -> None:
    v = verifier("standard-webhooks", SW_SECRET)
    listed = f"v1a,hnO3f9T8Ytu9HwrX v1,{'A' * 44} v1,not-base64 {SW_SIGNATURE}"
    assert check(v, sw(signature=listed), SW_BODY, now=SW_T) is None
    assert check(v, sw(prefix="svix-"), SW_BODY, now=SW_T) is None
    # the secret without its whsec_ prefix is the same key (as the reference libraries)
    bare = verifier("standard-webhooks", SW_SECRET.removeprefix("whsec_"))
    assert check(bare, sw(), SW_BODY, now=SW_T) is None
    rotated = verifier("standard-webhooks", "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", SW_SECRET)
    assert check(rotated, sw(), SW_BODY, now=SW_T) is None


# --- slack -------------------------------------------------------------------------------
# api.slack.com "Verifying requests from Slack", the step-by-step walk-through (signing
# secret, X-Slack-Request-Timestamp, body and the X-Slack-Signature it produces).
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_T = 1531420618
SLACK_BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
              b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA"
              b"&user_name=roadrunner&command=%2Fwebhook-collect&text="
              b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F"
              b"397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
              b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SLACK_HEADERS = [("x-slack-request-timestamp", str(SLACK_T)),
                 ("x-slack-signature", SLACK_SIGNATURE)]


def test_slack_accepts_the_documented_vector_and_refuses_forgeries() -> None:
    v = verifier("slack", SLACK_SECRET)
    assert check(v, SLACK_HEADERS, SLACK_BODY, now=SLACK_T) is None
    assert check(v, SLACK_HEADERS, SLACK_BODY.replace(b"foobar", b"foobaz"), now=SLACK_T) \
        == "signature mismatch"
    assert check(verifier("slack", WRONG_SECRET), SLACK_HEADERS, SLACK_BODY, now=SLACK_T) \
        == "signature mismatch"
    moved = [("x-slack-request-timestamp", str(SLACK_T + 1)), SLACK_HEADERS[1]]
    assert check(v, moved, SLACK_BODY, now=SLACK_T) == "signature mismatch"
    assert check(v, SLACK_HEADERS[1:], SLACK_BODY, now=SLACK_T) == "missing signature"
    assert check(v, [("x-slack-request-timestamp", "soon"), SLACK_HEADERS[1]], SLACK_BODY,
                 now=SLACK_T) == "malformed signature"


def test_slack_refuses_a_request_more_than_five_minutes_old() -> None:
    v = verifier("slack", SLACK_SECRET)
    assert check(v, SLACK_HEADERS, SLACK_BODY, now=SLACK_T + 300) is None
    assert check(v, SLACK_HEADERS, SLACK_BODY, now=SLACK_T + 301) \
        == "timestamp outside tolerance"
    rotated = verifier("slack", "an-older-secret", SLACK_SECRET)
    assert check(rotated, SLACK_HEADERS, SLACK_BODY, now=SLACK_T) is None


# --- token -------------------------------------------------------------------------------
# Telegram Bot API, setWebhook: "secret_token ... sent in a header
# X-Telegram-Bot-Api-Secret-Token"; GitLab sends its webhook secret token in X-Gitlab-Token.
TOKEN = "Tg_secret-token-0123456789"


def test_token_in_a_header() -> None:
    v = verifier("token", TOKEN, header="X-Telegram-Bot-Api-Secret-Token")
    good = [("x-telegram-bot-api-secret-token", TOKEN)]
    assert check(v, good, b"{}") is None
    assert check(v, [("x-telegram-bot-api-secret-token", TOKEN + "x")], b"{}") \
        == "token mismatch"
    assert check(v, [("x-telegram-bot-api-secret-token", TOKEN[:-1])], b"{}") \
        == "token mismatch"
    assert check(v, [], b"{}") == "missing token"
    assert check(v, good * 2, b"{}") == "token mismatch"
    assert check(verifier("token", "old-token", TOKEN, header="X-Gitlab-Token"),
                 [("x-gitlab-token", TOKEN)], b"{}") is None


def test_token_in_the_query() -> None:
    v = verifier("token", "tok/en+1", query="token")
    assert check(v, [], b"{}", query="a=1&token=tok%2Fen%2B1") is None
    assert check(v, [], b"{}", query="token=tok%2Fen%2B2") == "token mismatch"
    assert check(v, [], b"{}", query="a=1") == "missing token"
    assert check(v, [], b"{}", query="token=tok%2Fen%2B1&token=x") == "token mismatch"
    assert check(v, [("token", "tok/en+1")], b"{}") == "missing token"


@pytest.mark.parametrize("scheme", ["github", "stripe", "slack", "token"])
def test_reasons_never_carry_the_secret(scheme: str) -> None:
    keys = {"header": "X-Token"} if scheme == "token" else {}
    v = verifier(scheme, "s3cret-value", **keys)
    for headers in ([], [("x-token", "s3cret-valuX")], [("stripe-signature", "t=1,v1=00")]):
        reason = check(v, headers, b"s3cret-value", now=1)
        assert reason is not None and "s3cret" not in reason
