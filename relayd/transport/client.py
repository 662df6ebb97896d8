"""Open the relay Stream RPC as a client, with the connection's lifetime under control.

purerpc 0.8.0's stub form (`stub.Stream(aiter)`) corrupts trio state when left early,
its channel never closes the TCP socket, and a stream is never told that the connection
died (see shared/notes/stack.md). `open_relay_stream` uses purerpc's protocol layer
directly: the socket is always closed on exit, and when the connection ends, a pending
or later ``receive_message()`` raises `ConnectionLost` instead of hanging forever.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from purerpc.grpclib.config import GRPCConfiguration

from relayd.transport import _purerpc
from relayd.transport.stream import BatchStream
from relayd.wire import METHOD_NAME, SERVICE_NAME, pb

__all__ = ["ConnectionLost", "open_relay_stream"]

ConnectionLost = anyio.EndOfStream


@asynccontextmanager
async def open_relay_stream(host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                            connect_timeout: float, local_host: str | None = None
                            ) -> AsyncIterator[BatchStream[pb.StreamResponse]]:
    """Connect to relayd and open ``/relay.v1.RelayService/Stream``.

    Yields the stream (`BatchStream`). On exit the TCP connection is closed, whether or
    not the stream was ended.
    """
    sock: anyio.abc.ByteStream
    with anyio.fail_after(connect_timeout):
        # two calls, because anyio's overloads tell TLS from plain TCP by the arguments given
        if ssl_context is None:
            sock = await anyio.connect_tcp(host, port, local_host=local_host)
        else:
            sock = await anyio.connect_tcp(host, port, ssl_context=ssl_context,
                                           tls_standard_compatible=False, local_host=local_host)
    try:
        config = GRPCConfiguration(client_side=True)
        async with _purerpc.ClientSocket(config, sock) as grpc_socket:
            stream = await grpc_socket.start_request(
                "https" if ssl_context is not None else "http", SERVICE_NAME, METHOD_NAME,
                pb.StreamRequest.DESCRIPTOR.full_name, authority=f"{host}:{port}",
            )
            stream.expect_message_type(pb.StreamResponse)
            yield BatchStream(stream)
    finally:
        await anyio.aclose_forcefully(sock)
