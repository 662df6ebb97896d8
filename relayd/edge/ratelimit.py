"""A request rate per sender at the ingress: one token bucket per client address.

Each sender may make ``burst`` requests at once, then ``rate`` per second (a token comes
back every ``1 / rate`` seconds, up to ``burst``). A request with no token is answered
429 with ``Retry-After`` (the seconds until one is back, rounded up) before anything else
is done for it: no routing, no body read, nothing stored. The first refusal of a sender
is logged, then at most one line per sender per `LOG_INTERVAL` with the count since.

The sender is the ASGI scope's ``client`` (set by `relayd.edge.client_addr` from a trusted
proxy's header); an IPv6 sender is limited per /64 (`sender_key`), the block one
subscriber usually gets, else each address of it would get a bucket of its own.

Memory: at most `MAX_SENDERS` buckets; a new sender beyond that takes the place of the
one heard from least recently (a bucket not used for ``burst / rate`` seconds is full
again, the same as no bucket at all). A flood from more addresses than that gets a fresh
bucket per address now and then: many addresses defeat a per-address limit anyway, and
the other bounds (connections, bytes in flight, pending per endpoint, disk) still hold.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from relayd.common.asgi import ASGIApp, Receive, Scope, Send
from relayd.edge.http import send_json

__all__ = ["LOG_INTERVAL", "MAX_SENDERS", "RateLimitStatistics", "TokenBuckets",
           "rate_limited", "sender_key"]

log = logging.getLogger(__name__)

# Buckets kept at most (a few hundred bytes each: about 2 MB in all).
MAX_SENDERS = 10_000
# Seconds between two log lines about the same sender.
LOG_INTERVAL = 60.0
# IPv6 senders share a bucket per prefix of this length.
IPV6_PREFIX = 64


def sender_key(address: str) -> str:
    """The bucket ``address`` counts against: itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return address


class _Bucket:
    __slots__ = ("at", "logged_at", "tokens", "unlogged")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at  # when ``tokens`` was last brought up to date
        self.logged_at: float | None = None
        self.unlogged = 0  # refusals since the last log line


@dataclass(frozen=True)
class RateLimitStatistics:
    senders: int  # buckets held
    max_senders: int


class TokenBuckets:
    """``rate`` requests per second and ``burst`` at once, per sender."""

    def __init__(self, rate: float, burst: int, *, max_senders: int = MAX_SENDERS,
                 clock: Callable[[], float] = trio.current_time) -> None:
        if rate <= 0 or burst < 1 or max_senders < 1:
            raise ValueError("rate, burst and max_senders must be positive")
        self._rate = rate
        self._burst = burst
        self._max_senders = max_senders
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, sender: str) -> float:
        """Take a token of ``sender``'s: 0.0 if there was one, else the seconds until
        one is back (nothing taken)."""
        now = self._clock()
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = _Bucket(float(self._burst), now)
            if len(self._buckets) > self._max_senders:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(sender)
            elapsed = max(now - bucket.at, 0.0)
            bucket.tokens = min(float(self._burst), bucket.tokens + elapsed * self._rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def refusal_to_log(self, sender: str, interval: float = LOG_INTERVAL) -> int | None:
        """After a refusal of ``sender``: the refusals to report now (this one included)
        if its last report is ``interval`` seconds old or more, else None (counted)."""
        bucket = self._buckets.get(sender)
        if bucket is None:  # pragma: no cover - `take` just made it
            return None
        bucket.unlogged += 1
        now = self._clock()
        if bucket.logged_at is not None and now - bucket.logged_at < interval:
            return None
        bucket.logged_at = now
        count, bucket.unlogged = bucket.unlogged, 0
        return count

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    def statistics(self) -> RateLimitStatistics:
        return RateLimitStatistics(senders=len(self._buckets), max_senders=self._max_senders)


def rate_limited(app: ASGIApp, buckets: TokenBuckets) -> ASGIApp:
    """``app`` behind ``buckets``: a request over its sender's rate gets 429 instead."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await app(scope, receive, send)
            return
        sender = sender_key(str(client[0]))
        wait = buckets.take(sender)
        if not wait:
            await app(scope, receive, send)
            return
        retry_after = max(math.ceil(wait), 1)
        count = buckets.refusal_to_log(sender)
        if count is not None:
            log.warning("rate limit: sender=%s refused (429) %d request(s) over %g/s "
                        "(burst %d); next report for this sender in %gs at the earliest",
                        sender, count, buckets.rate, buckets.burst, LOG_INTERVAL)
        # close: the body was not read, and a sender this busy can open a new connection
        await send_json(send, 429, {"error": "too many requests, retry later"},
                        [(b"retry-after", str(retry_after).encode()),
                         (b"connection", b"close")])

    return limited
