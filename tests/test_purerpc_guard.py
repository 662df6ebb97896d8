"""relayd.transport._purerpc matches the installed purerpc: an upgrade fails here first.

`relayd.transport._purerpc` replaces or repeats purerpc functions and reads its private
attributes. These tests pin what it was written against, so a new purerpc release (or a
changed install) fails with a message saying what to re-read, instead of as an obscure
error or a silent behaviour change somewhere in the suite. This is the one test module
that looks at private attributes on purpose: purerpc's, which are the subject.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import trio
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpc_socket import GRPCSocket, SocketWrapper
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.status import Status, StatusCode

from relayd.transport import _purerpc
from relayd.wire import METHOD_NAME, SERVICE_NAME, pb

ROOT = Path(__file__).resolve().parents[1]
MODULE = "relayd/transport/_purerpc.py"
UPGRADE_STEPS = (
    f"Re-read each purerpc function named in {MODULE} (its docstring says what relayd "
    "repeats or overrides, and which private attributes it reads) against the new source, "
    f"adapt {MODULE}, then update PURERPC_VERSION, REPLACED_SOURCE_SHA256 and the purerpc "
    "pin in pyproject.toml."
)

# Private attributes `_purerpc` reads or calls, on purerpc's connection (GRPCSocket) and
# stream (GRPCStream) objects.
SOCKET_ATTRIBUTES = ("_socket", "_grpc_connection", "_streams", "_receive_buffer_size",
                     "_allocate_stream", "_listen", "_reader_thread")
STREAM_ATTRIBUTES = ("_grpc_connection", "_grpc_socket", "_socket", "_incoming_events",
                     "_incoming_message_type", "_start_stream_event", "_end_stream_event",
                     "_set_flow_control_update", "_wait_flow_control_update", "_close_remote",
                     "stream_id", "end_stream_event")
# What `_purerpc` calls on the objects behind those attributes (``h2_connection`` is the
# h2 connection, whose per-stream state `close_stream` reads).
CONNECTION_ATTRIBUTES = ("config", "receive_data", "flow_control_window", "send_data",
                         "acknowledge_received_data", "h2_connection")
# purerpc's SocketWrapper, which `_purerpc._Writer` extends (its writer and flush replaced).
SOCKET_WRAPPER_ATTRIBUTES = ("recv", "flush", "_writer_thread", "_stream", "_grpc_connection",
                             "_running", "_flush_event")


def _source_sha256(qualified_name: str) -> str | None:
    """sha256 of the source of ``module.Class.function``, None if it no longer exists."""
    module_name, class_name, function_name = qualified_name.rsplit(".", 2)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        function = cls.__dict__[function_name]
    except (ImportError, AttributeError, KeyError):
        return None
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def test_installed_purerpc_is_the_version_relayd_was_written_against() -> None:
    installed = importlib.metadata.version("purerpc")
    assert installed == _purerpc.PURERPC_VERSION, (
        f"purerpc {installed} is installed, {MODULE} was written against "
        f"{_purerpc.PURERPC_VERSION}. {UPGRADE_STEPS}"
    )
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"purerpc=={_purerpc.PURERPC_VERSION}" in dependencies, (
        f"pyproject.toml must pin purerpc=={_purerpc.PURERPC_VERSION} (PURERPC_VERSION in {MODULE})"
    )


def test_the_purerpc_functions_relayd_replaces_are_unchanged() -> None:
    changed = {name: _source_sha256(name) for name, recorded
               in _purerpc.REPLACED_SOURCE_SHA256.items() if _source_sha256(name) != recorded}
    assert not changed, (
        "purerpc functions that relayd replaces or repeats have changed: "
        + "; ".join(f"{name} (now {'gone' if digest is None else 'sha256 ' + digest})"
                    for name, digest in changed.items())
        + f". {UPGRADE_STEPS}"
    )


def test_purerpc_still_calls_the_methods_relayd_overrides() -> None:
    # relayd's overrides only take effect if purerpc still reaches them through these.
    glue = {"GRPCSocket.listen": (GRPCSocket.listen, "self._listen()"),
            "GRPCSocket.__aenter__": (GRPCSocket.__aenter__, "self._reader_thread"),
            "GRPCSocket._stream_ctor": (GRPCSocket._stream_ctor, "self.StreamClass("),
            "SocketWrapper.__aenter__": (SocketWrapper.__aenter__, "self._writer_thread")}
    lost = [name for name, (function, call) in glue.items()
            if call not in inspect.getsource(function)]
    assert not lost, (
        f"purerpc's {', '.join(lost)} no longer call(s) what {MODULE} overrides "
        f"(_Socket._listen, ClientSocket._reader_thread, _Socket.StreamClass, "
        f"_Writer._writer_thread). {UPGRADE_STEPS}"
    )


@asynccontextmanager
async def _loopback() -> AsyncIterator[tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]]:
    """Both ends of a TCP connection on loopback, force-closed on exit."""
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with multi:
        listener = multi.listeners[0]
        assert isinstance(listener, anyio.abc.SocketListener)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
    try:
        yield client, server
    finally:
        await anyio.aclose_forcefully(client)
        await anyio.aclose_forcefully(server)


async def _receive_some(stream: GRPCProtoStream) -> list[Any]:
    """Messages, skipping the headers event that comes first."""
    while True:
        messages, _ = await _purerpc.receive_messages(stream, 10)
        if messages:
            return messages


def _missing(obj: object, names: tuple[str, ...]) -> list[str]:
    return [f"{type(obj).__name__}.{name}" for name in names if not hasattr(obj, name)]


def _assert_none_missing(missing: list[str]) -> None:
    assert not missing, (
        f"purerpc no longer has what {MODULE} uses: {', '.join(sorted(set(missing)))}. "
        f"{UPGRADE_STEPS}"
    )


async def test_purerpc_connections_have_the_private_attributes_relayd_uses() -> None:
    async with _loopback() as (client_sock, server_sock):
        # constructed, not entered: checked before any of purerpc's tasks could trip on them
        sockets = (_purerpc.ServerSocket(GRPCConfiguration(client_side=False), server_sock),
                   _purerpc.ClientSocket(GRPCConfiguration(client_side=True), client_sock))
        missing: list[str] = []
        for grpc_socket in sockets:
            missing += _missing(grpc_socket, SOCKET_ATTRIBUTES)
            if (connection := getattr(grpc_socket, "_grpc_connection", None)) is not None:
                missing += (_missing(connection, CONNECTION_ATTRIBUTES)
                            + _missing(connection.config, ("message_encoding",)))
            if (wrapper := getattr(grpc_socket, "_socket", None)) is not None:
                missing += _missing(wrapper, SOCKET_WRAPPER_ATTRIBUTES)
        _assert_none_missing(missing)


async def test_purerpc_streams_have_the_private_attributes_relayd_uses() -> None:
    server_streams: list[GRPCProtoStream] = []
    stream_arrived = trio.Event()
    request_seen = trio.Event()

    async def answer(stream: GRPCProtoStream) -> None:
        await stream.start_response()
        await _receive_some(stream)
        request_seen.set()
        await _purerpc.send_messages(stream, [pb.StreamResponse(
            heartbeat=pb.Heartbeat(timestamp=2))])

    async def serve(server_socket: _purerpc.ServerSocket, nursery: trio.Nursery) -> None:
        # the listen loop is what feeds the streams: each is served in a task of its own
        async for stream in server_socket.listen():
            stream.expect_message_type(pb.StreamRequest)
            server_streams.append(stream)
            stream_arrived.set()
            nursery.start_soon(answer, stream)

    with trio.fail_after(5):
        async with _loopback() as (client_sock, server_sock), \
                _purerpc.ServerSocket(GRPCConfiguration(client_side=False),
                                      server_sock) as server_socket, \
                _purerpc.ClientSocket(GRPCConfiguration(client_side=True),
                                      client_sock) as client_socket, \
                trio.open_nursery() as nursery:
            nursery.start_soon(serve, server_socket, nursery)
            client_stream = await client_socket.start_request(
                "http", SERVICE_NAME, METHOD_NAME, pb.StreamRequest.DESCRIPTOR.full_name,
                authority="127.0.0.1")
            client_stream.expect_message_type(pb.StreamResponse)
            await stream_arrived.wait()
            [server_stream] = server_streams
            missing = (_missing(server_stream, STREAM_ATTRIBUTES)
                       + _missing(client_stream, STREAM_ATTRIBUTES))
            h2_connection = getattr(getattr(server_stream, "_grpc_connection", None),
                                    "h2_connection", None)
            h2_stream = getattr(h2_connection, "streams", {}).get(server_stream.stream_id)
            if h2_stream is None or not hasattr(h2_stream, "closed"):
                missing.append("GRPCConnection.h2_connection.streams[stream_id].closed")
            _assert_none_missing(missing)

            # and relayd's functions work on them: one message each way
            await _purerpc.send_messages(client_stream, [pb.StreamRequest(
                heartbeat=pb.Heartbeat(timestamp=1))])
            await request_seen.wait()
            replies = await _receive_some(client_stream)
            assert [reply.heartbeat.timestamp for reply in replies] == [2]
            await _purerpc.close_stream(server_stream, Status(StatusCode.OK))
            nursery.cancel_scope.cancel()
