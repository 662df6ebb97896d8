"""Sender verification through the real ingress: a forgery is answered 401 and never stored.

Also the refusals' metric, their rate-limited log line and the start-up line naming the
endpoints left unverified.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from relayd.edge.config import Config, parse_config
from relayd.edge.daemon import Relayd
from relayd.edge.verify import RejectionLog
from tests.helpers import make_config, post
from tests.test_metrics import scrape, value
from tests.test_verify import (
    GITHUB_BODY,
    GITHUB_SECRET,
    GITHUB_SIGNATURE,
    STRIPE_BODY,
    STRIPE_HEADER,
    STRIPE_SECRET,
)

FORGED = "sha256=" + "0" * 64


def verified_config(tmp_path: Path) -> Config:
    """make_config's endpoints, with alpha verified as GitHub and beta as Stripe."""
    config = make_config(tmp_path)
    raw = {"hub": {"secret_file": ""}, "endpoints": [
        {"id": "alpha", "destination_url": "http://127.0.0.1:9/alpha", "verify": "github",
         "secret_env": "ALPHA_SECRET"},
        {"id": "beta", "destination_url": "http://127.0.0.1:9/beta", "verify": "stripe",
         "secret_env": "BETA_SECRET"},
    ]}
    verified = parse_config(raw, environ={"RELAYD_HUB_SECRET": "hub", "ALPHA_SECRET":
                                          GITHUB_SECRET, "BETA_SECRET": STRIPE_SECRET})
    return replace(config, endpoints=verified.endpoints + config.endpoints[2:])


@pytest.fixture
async def edge(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Relayd]:
    daemon = Relayd(verified_config(tmp_path))
    await nursery.start(daemon.run)
    yield daemon


async def test_a_forged_webhook_is_401_and_not_stored_a_signed_one_is_202(
        edge: Relayd) -> None:
    ingress = edge.addresses.ingress
    forged = await post(ingress, "alpha", GITHUB_BODY, {"x-hub-signature-256": FORGED})
    assert forged.status_code == 401 and forged.json() == {"error": "signature mismatch"}
    unsigned = await post(ingress, "alpha", GITHUB_BODY)
    assert unsigned.status_code == 401 and unsigned.json() == {"error": "missing signature"}
    assert (await edge.store.counts())["pending"] == 0

    signed = await post(ingress, "alpha", GITHUB_BODY,
                        {"x-hub-signature-256": GITHUB_SIGNATURE})
    assert signed.status_code == 202
    row = await edge.store.get(signed.json()["id"])
    assert row is not None and row["body"] == GITHUB_BODY
    # an endpoint without verify takes anything, as before
    assert (await post(ingress, "gamma", b"anything")).status_code == 202
    assert (await edge.store.counts())["pending"] == 2


async def test_a_replayed_stripe_webhook_is_refused_by_its_age(edge: Relayd) -> None:
    # authentic, but signed in 2017: the ingress compares with the wall clock
    response = await post(edge.addresses.ingress, "beta", STRIPE_BODY,
                          {"stripe-signature": STRIPE_HEADER})
    assert response.status_code == 401
    assert response.json() == {"error": "timestamp outside tolerance"}
    assert (await edge.store.counts())["pending"] == 0


async def test_refusals_are_counted_by_endpoint_and_reason(edge: Relayd) -> None:
    ingress = edge.addresses.ingress
    for _ in range(2):
        await post(ingress, "alpha", GITHUB_BODY, {"x-hub-signature-256": FORGED})
    await post(ingress, "beta", STRIPE_BODY)
    samples = await scrape(edge)
    assert value(samples, "relayd_ingress_rejected_total", endpoint="alpha",
                 reason="signature mismatch") == 2
    assert value(samples, "relayd_ingress_rejected_total", endpoint="beta",
                 reason="missing signature") == 1
    assert value(samples, "relayd_ingress_requests_total", code="401") == 3


async def test_refusals_from_one_sender_are_logged_once_per_interval(
        edge: Relayd, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        response = await post(edge.addresses.ingress, "alpha", GITHUB_BODY,
                              {"x-hub-signature-256": FORGED})
        assert response.status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "relayd.edge.verify"]
    assert lines == ["webhook rejected (401): signature mismatch endpoint=alpha "
                     "sender=127.0.0.1 (further ones from this sender: one line per 60s)"]
    assert GITHUB_SECRET not in caplog.text


async def test_startup_names_the_endpoints_without_verification(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await nursery.start(Relayd(verified_config(tmp_path)).run)
    lines = [r.getMessage() for r in caplog.records if "without sender verification" in
             r.getMessage()]
    assert lines == ["endpoints without sender verification (whoever knows the URL can have "
                     "a webhook stored; see [[endpoints]] verify): gamma"]


class Clock:
    """Seconds set by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rejection_log_one_line_per_sender_per_interval_then_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relayd.edge.verify")
    clock = Clock()
    rejections = RejectionLog(60.0, clock=clock)
    for t, sender in [(0, "a"), (10, "a"), (20, "b"), (59.9, "a"), (60, "a"), (75, "a"),
                      (130, "a"), (200, "a")]:
        clock.now = t
        rejections.rejected("gh", sender, "signature mismatch")
    assert [r.getMessage() for r in caplog.records] == [
        "webhook rejected (401): signature mismatch endpoint=gh sender=a (further ones from "
        "this sender: one line per 60s)",
        "webhook rejected (401): signature mismatch endpoint=gh sender=b (further ones from "
        "this sender: one line per 60s)",
        "webhook rejected (401): signature mismatch endpoint=gh sender=a (and 2 more from "
        "this sender since 60s ago)",
        "webhook rejected (401): signature mismatch endpoint=gh sender=a (and 1 more from "
        "this sender since 70s ago)",
        "webhook rejected (401): signature mismatch endpoint=gh sender=a",
    ]


def test_rejection_log_remembers_a_bounded_number_of_senders(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relayd.edge.verify")
    clock = Clock()
    rejections = RejectionLog(60.0, max_senders=2, clock=clock)
    for t, sender in [(0, "a"), (1, "a"), (2, "b"), (3, "c"), (4, "d"), (61, "e")]:
        clock.now = t
        rejections.rejected("gh", sender, "missing signature")
    assert [r.getMessage() for r in caplog.records] == [
        "webhook rejected (401): missing signature endpoint=gh sender=a (further ones from "
        "this sender: one line per 60s)",
        "webhook rejected (401): missing signature endpoint=gh sender=b (further ones from "
        "this sender: one line per 60s)",
        # at 61 a's interval has passed: its count is logged as it is forgotten, then the
        # refusals from senders there was no room for, then e
        "webhooks rejected (401): 1 more from sender=a since 61s ago",
        "webhooks rejected (401): 2 more from senders beyond the 2 remembered",
        "webhook rejected (401): missing signature endpoint=gh sender=e (further ones from "
        "this sender: one line per 60s)",
    ]
