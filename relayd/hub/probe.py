"""Telling a wrong ``hub.edge_url`` apart from a relayd that is down or misbehaving.

Pointed at something other than relayd's gRPC port (its ingress or admin port, another
web server), the hub's handshake fails with an error that says nothing useful: a
purerpc ``ProtocolError`` (an HTTP/2 server answered 404), an end of stream (an HTTP/1
server hung up on the HTTP/2 preface) or a ConnectResponse that never comes (a server
that waits for the end of the request body). relayd's gRPC port speaks only HTTP/2, so
it never answers a plain HTTP/1.1 request with a status line: a port that does is not
relayd's. `not_relayd` asks once and says so.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import h2.exceptions
import httpx
import trio
from purerpc.grpclib.exceptions import GRPCError

__all__ = ["HANDSHAKE_ERRORS", "NOT_RELAYD", "not_relayd"]

NOT_RELAYD = ("this is not a relayd gRPC port ({answer}); hub.edge_url must be the address of "
              "relayd's relay.grpc_listen, not of its ingress or admin listener")

# Failures of a connection that did reach a server but got no relayd handshake back: the
# ones worth a probe. (Refused, unreachable, TLS and connect-timeout errors are OSErrors
# and say what they mean already.)
HANDSHAKE_ERRORS = (
    GRPCError,
    h2.exceptions.H2Error,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    trio.TooSlowError,  # no ConnectResponse in time
)


async def not_relayd(edge_url: str, ca_file: Path | None = None) -> str | None:
    """What answered a plain HTTP/1.1 GET of ``edge_url`` (``"HTTP 404 from GET URL"``): then
    it is not relayd's gRPC port. None if nothing answered one (as relayd's gRPC port).

    Bound it with a cancel scope; it makes one connection.
    """
    url = edge_url.rstrip("/") + "/"
    # Not the hub's TLS context: that one offers only ALPN h2 (and httpx would change it).
    verify = ssl.create_default_context(cafile=ca_file)
    try:
        async with httpx.AsyncClient(verify=verify, timeout=None, follow_redirects=False,
                                     trust_env=False) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return None
    return f"HTTP {response.status_code} from GET {url}"
