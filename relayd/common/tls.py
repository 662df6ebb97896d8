"""TLS contexts for the gRPC link: the edge's server side and the hub's client side.

Both negotiate ALPN ``h2`` (grpcio / grpc-js clients refuse a server without it) and
require TLS 1.2 or newer. The edge's HTTPS listeners use `server_context` too, offering
``h2`` and ``http/1.1``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

__all__ = ["client_context", "server_context"]


def server_context(cert_file: Path, key_file: Path, alpn: Sequence[str] = ("h2",)
                   ) -> ssl.SSLContext:
    """The edge's context; raises `OSError`/`ssl.SSLError` if the files are unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(list(alpn))
    return context


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The hub's context: system CAs, or only ``ca_file`` for a private edge certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context
