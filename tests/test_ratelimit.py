"""The ingress rate limit per sender, and who the sender is behind a reverse proxy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from relayd.edge.client_addr import TrustedProxies, parse_address
from relayd.edge.config import ConfigError, load_config
from relayd.edge.daemon import Relayd
from relayd.edge.ratelimit import TokenBuckets, sender_key
from tests.conftest import start_edge
from tests.helpers import TestHub

ENV = {"RELAYD_HUB_SECRET": "from-env"}


class Clock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the token bucket ------------------------------------------------------------------


def test_a_sender_gets_burst_at_once_then_rate_per_second() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5  # empty: a token is back in 1 / rate
    clock.now = 0.25
    assert buckets.take("a") == 0.25  # half a token: the other half in 0.25 s
    clock.now = 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == 0.5
    clock.now = 100.0  # a long pause fills the bucket to burst, not beyond
    assert [buckets.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_a_refused_request_takes_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=4.0, burst=1, clock=clock)
    assert buckets.take("a") == 0.0
    for _ in range(10):  # hammering while empty does not push the next token back
        assert buckets.take("a") == 0.25
    clock.now = 0.25
    assert buckets.take("a") == 0.0


def test_senders_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == 1.0
    assert buckets.take("b") == 0.0


def test_the_buckets_are_capped_and_the_sender_heard_from_least_recently_goes() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_senders=2, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0
    assert buckets.take("a") == 1.0  # a is now the most recent
    assert buckets.take("c") == 0.0  # b goes
    assert buckets.statistics().senders == 2
    assert buckets.take("a") == 1.0  # a was kept, still empty
    assert buckets.take("b") == 0.0  # b was forgotten: a full bucket again (c goes)
    # a flood from many addresses holds the table at its cap
    for i in range(10_000):
        buckets.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert buckets.statistics().senders == 2


def test_refusals_are_reported_once_per_sender_per_interval() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=0.001, burst=1, clock=clock)  # no token back in the test
    buckets.take("a")
    reports = []
    for quarter in range(10):
        clock.now = quarter / 4  # four refusals a second
        assert buckets.take("a")
        reports.append(buckets.refusal_to_log("a", interval=1.0))
    # the first refusal is reported at once, then the count since, once a second at most
    assert reports == [1, None, None, None, 4, None, None, None, 4, None]
    assert buckets.take("b") == 0.0 and buckets.take("b")
    assert buckets.refusal_to_log("b", interval=1.0) == 1  # every sender on its own


def test_ipv6_senders_share_a_bucket_per_64() -> None:
    assert sender_key("2001:db8:1:2:aaaa::1") == sender_key("2001:db8:1:2:bbbb::2") \
        == "2001:db8:1:2::/64"
    assert sender_key("2001:db8:1:3::1") != sender_key("2001:db8:1:2::1")
    assert sender_key("192.0.2.1") == "192.0.2.1"


# -- the sender's address --------------------------------------------------------------


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode()) for v in values]


def test_the_headers_of_a_peer_that_is_not_a_trusted_proxy_are_ignored() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client("192.0.2.7", xff("203.0.113.1")) == "192.0.2.7"
    assert TrustedProxies().client("10.0.0.1", xff("203.0.113.1")) == "10.0.0.1"


def test_behind_trusted_proxies_the_sender_is_the_rightmost_untrusted_address() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    # the stranger wrote 1.1.1.1; the outer proxy 192.0.2.1 added 203.0.113.5; the inner
    # one (the peer) added 192.0.2.1
    headers = xff("1.1.1.1, 203.0.113.5", "192.0.2.1")  # two header lines: one list
    assert proxies.client("10.0.0.1", headers) == "203.0.113.5"
    # only proxies: the left-most one is the sender
    assert proxies.client("10.0.0.1", xff("10.9.9.9, 192.0.2.1")) == "10.9.9.9"
    # an entry that is not an address stops the walk at the proxy that wrote it
    assert proxies.client("10.0.0.1", xff("203.0.113.5, unknown")) == "10.0.0.1"
    assert proxies.client("10.0.0.1", xff("203.0.113.5, garbage, 192.0.2.1")) == "192.0.2.1"
    # no header: the proxy itself
    assert proxies.client("10.0.0.1", []) == "10.0.0.1"


def test_forwarded_rfc_7239_is_read_when_configured_and_the_other_header_is_not() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    headers = [(b"forwarded", b'for=192.0.2.60;proto=http;by=203.0.113.43, '
                           b'For="[2001:db8:cafe::17]:4711"'),
               (b"x-forwarded-for", b"198.51.100.1")]
    assert proxies.client("10.0.0.1", headers) == "2001:db8:cafe::17"
    # quoted commas do not split an element; an obfuscated node stops the walk
    assert proxies.client("10.0.0.1", [(b"forwarded", b'for="192.0.2.1";x="a,b"')]) \
        == "192.0.2.1"
    assert proxies.client("10.0.0.1", [(b"forwarded", b"for=192.0.2.1, for=_hidden")]) \
        == "10.0.0.1"
    # and with X-Forwarded-For configured, Forwarded is the stranger's
    assert TrustedProxies(["10.0.0.0/8"]).client("10.0.0.1", headers) == "198.51.100.1"


def test_addresses_are_read_with_ports_and_ipv4_mapped_ones_as_ipv4() -> None:
    assert str(parse_address("192.0.2.1:4711")) == "192.0.2.1"
    assert str(parse_address(" [2001:db8::1]:80 ")) == "2001:db8::1"
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_address("unknown") is None
    assert TrustedProxies().client("::ffff:192.0.2.1", []) == "192.0.2.1"


# -- configuration ---------------------------------------------------------------------


def test_rate_limit_defaults_and_zero_turns_it_off(tmp_path: Path) -> None:
    path = tmp_path / "relayd.toml"
    path.write_text("")
    ingress = load_config(path, environ=ENV).ingress
    assert (ingress.rate, ingress.burst, ingress.trusted_proxies, ingress.proxy_header) \
        == (50.0, 100, (), "x-forwarded-for")
    path.write_text("[ingress]\nrate = 0\ntrusted_proxies = ['10.0.0.0/8', '::1']\n"
                    "proxy_header = 'forwarded'\n")
    ingress = load_config(path, environ=ENV).ingress
    assert (ingress.rate, ingress.trusted_proxies, ingress.proxy_header) \
        == (0.0, ("10.0.0.0/8", "::1"), "forwarded")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate = -1", r"ingress.rate: must be a number >= 0 \(0: off\), got -1"),
        ("rate = 'fast'", r"ingress.rate: must be a number >= 0"),
        ("burst = 0", "ingress.burst: must be a positive integer"),
        ("trusted_proxies = ['10.0.0.1/8']", "ingress.trusted_proxies: '10.0.0.1/8' is not"),
        ("trusted_proxies = ['proxy.lan']", "ingress.trusted_proxies: 'proxy.lan' is not"),
        ("proxy_header = 'x-real-ip'", "ingress.proxy_header: must be one of"),
    ],
)
def test_bad_rate_limit_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "relayd.toml"
    path.write_text(f"[ingress]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=ENV)


# -- through the real ingress ----------------------------------------------------------


@asynccontextmanager
async def client_from(host: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``host`` (a loopback address)."""
    transport = httpx.AsyncHTTPTransport(local_address=host)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


async def post_from(client: httpx.AsyncClient, edge: Relayd, body: bytes = b"{}",
                    headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(f"http://{edge.addresses.ingress}/h/alpha", content=body,
                             headers=headers or {})


async def test_a_flood_from_one_address_is_held_to_its_rate_while_another_is_served(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # one token per 100 s: nothing comes back while the test runs (under 10 s)
    edge = await start_edge(nursery, tmp_path, ingress={"rate": 0.01, "burst": 3})
    assert edge.store is not None
    async with client_from("127.0.0.2") as flood, client_from("127.0.0.3") as other:
        answers = [await post_from(flood, edge, b"%d" % i) for i in range(20)]
        assert [a.status_code for a in answers] == [202] * 3 + [429] * 17
        refused = answers[-1]
        # seconds until the next token, rounded up: 100 less the time since the first
        assert 90 < int(refused.headers["retry-after"]) <= 100
        assert refused.json() == {"error": "too many requests, retry later"}
        # the other sender has a bucket of its own
        assert [(await post_from(other, edge)).status_code for _ in range(4)] \
            == [202, 202, 202, 429]
    counts = await edge.store.counts()
    assert counts["pending"] == 6
    for answer in answers[:3]:
        row = await edge.store.get(answer.json()["id"])
        assert row is not None and row["remote_addr"] == "127.0.0.2"
    # 18 refusals, one log line per sender
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and "rate limit" in r.getMessage()]
    assert len(lines) == 2
    assert "sender=127.0.0.2 refused (429) 1 request(s)" in lines[0]
    assert "sender=127.0.0.3" in lines[1]


async def test_a_spoofed_x_forwarded_for_is_ignored_from_an_untrusted_peer(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, ingress={
        "rate": 0.01, "burst": 1, "trusted_proxies": ["127.0.0.2"]})
    assert edge.store is not None
    async with client_from("127.0.0.3") as stranger:
        first = await post_from(stranger, edge, headers={"x-forwarded-for": "203.0.113.1"})
        # another made-up sender does not get another bucket
        second = await post_from(stranger, edge, headers={"x-forwarded-for": "203.0.113.2"})
    assert (first.status_code, second.status_code) == (202, 429)
    row = await edge.store.get(first.json()["id"])
    assert row is not None and row["remote_addr"] == "127.0.0.3"


async def test_x_forwarded_for_is_honoured_from_a_trusted_proxy_and_reaches_the_hub(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, ingress={
        "rate": 0.01, "burst": 1, "trusted_proxies": ["127.0.0.2/32"]})
    assert edge.store is not None
    async with client_from("127.0.0.2") as proxy:

        async def via_proxy(chain: str) -> httpx.Response:
            return await post_from(proxy, edge, headers={"x-forwarded-for": chain})

        # the proxy appended the sender it saw to what the sender claimed
        first = await via_proxy("198.51.100.66, 203.0.113.1")
        assert first.status_code == 202
        # each sender behind the proxy has a bucket of its own
        assert (await via_proxy("203.0.113.2")).status_code == 202
        refused = await via_proxy("198.51.100.77, 203.0.113.1")
        assert refused.status_code == 429
        # the proxy's own requests (no header) count against the proxy's address
        assert (await post_from(proxy, edge)).status_code == 202
    row = await edge.store.get(first.json()["id"])
    assert row is not None and row["remote_addr"] == "203.0.113.1"
    async with TestHub.connected(edge.addresses.grpc, endpoint_ids=["alpha"]) as hub:
        envelope = await hub.recv_webhook()
    assert (envelope.id, envelope.remote_addr) == (first.json()["id"], "203.0.113.1")
