"""Who sent a request: the TCP peer, or whom a trusted reverse proxy says it forwarded.

Behind a reverse proxy every request comes from the proxy's address, and the sender is
only named in a header the proxy adds (``X-Forwarded-For``, or ``Forwarded`` of RFC
7239). Anybody can send such a header, so it is read only when the TCP peer is one of
``ingress.trusted_proxies``. Each proxy appends the address it received the request from,
so the list is read from the right: the sender is the right-most address that is not
itself a trusted proxy. Whatever a stranger wrote further left is never reached; an entry
that is not an address (``unknown``, an obfuscated ``_name``) stops the walk at the proxy
that wrote it.

Only the header ``ingress.proxy_header`` is read: when a proxy appends to one of the two,
a stranger can fill in the other, and nothing tells which one the proxy wrote.

IPv4 peers of a dual-stack listener (``::ffff:192.0.2.1``) are given as IPv4.
`with_client_address` puts the result into the ASGI scope's ``client`` for the apps it
wraps (the rate limit, and the ``remote_addr`` the hub passes on as X-Forwarded-For).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence

from relayd.common.asgi import ASGIApp, Receive, Scope, Send
from relayd.edge.config import IngressConfig

__all__ = ["TrustedProxies", "parse_address", "with_client_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# ``for=`` in one Forwarded element: a token or a quoted string (RFC 7239 section 4).
FORWARDED_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it (``192.0.2.1``, ``192.0.2.1:4711``, ``2001:db8::1``,
    ``[2001:db8::1]:4711``, quoted), without its port; None if it is not one."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has two colons or more)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _x_forwarded_for(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        yield from value.split(",")


def _forwarded(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        for element in _elements(value):
            match = FORWARDED_FOR.search(element)
            yield match.group(1) if match else ""  # an element without for=: not an address


def _elements(value: str) -> Iterator[str]:
    """``value`` split at the commas outside quoted strings, in one pass (the header is
    the sender's text: no pattern that could backtrack over it)."""
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield value[start:index]
            start = index + 1
    yield value[start:]


class TrustedProxies:
    """The reverse proxies whose header is believed, and how to read it."""

    def __init__(self, networks: Iterable[str] = (),
                 header: str = IngressConfig.proxy_header) -> None:
        """``networks``: addresses or CIDRs (validated by the config); ``header``:
        ``x-forwarded-for`` or ``forwarded``."""
        self._networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in networks)
        self._header = header.encode()
        self._entries = _forwarded if header == "forwarded" else _x_forwarded_for

    def trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def client(self, peer: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
        """The sender of a request from ``peer`` carrying ``headers`` (ASGI pairs, names
        in lower case); ``peer`` unchanged when it is not an IP address."""
        address = parse_address(peer)
        if address is None:
            return peer
        if self._networks and self.trusts(address):
            # repeated header lines are one list, in order (RFC 9110 section 5.3)
            values = [v.decode("latin-1") for k, v in headers if k == self._header]
            for entry in reversed(list(self._entries(values))):
                if not self.trusts(address):
                    break
                forwarded = parse_address(entry)
                if forwarded is None:
                    break
                address = forwarded
        return str(address)


def with_client_address(app: ASGIApp, proxies: TrustedProxies) -> ASGIApp:
    """``app`` with the scope's ``client`` set to the sender (`TrustedProxies.client`); the
    port is the peer's when the sender is the peer, else 0 (not known)."""

    async def resolved(scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client:
            sender = proxies.client(str(client[0]), scope["headers"])
            port = client[1] if sender == client[0] else 0
            scope = {**scope, "client": (sender, port)}
        await app(scope, receive, send)

    return resolved
