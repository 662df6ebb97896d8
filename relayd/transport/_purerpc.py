"""Every use of purerpc's private API, in one place.

purerpc 0.8.0 is in maintenance mode and its public surface is too thin for relayd (see
shared/notes/stack.md), so the transport reaches into it here and nowhere else:

- `_Socket._listen` (both `ServerSocket` and `ClientSocket`) replaces
  ``purerpc.grpc_socket.GRPCSocket._listen`` (the receive loop): the same logic, but a whole
  ``recv()`` worth of events is queued without a checkpoint per event, and flushed once;
- `_Writer` replaces ``SocketWrapper.flush`` and ``SocketWrapper._writer_thread``: ``flush``
  wakes the writer only when h2 has something to send. It relies on
  ``SocketWrapper.__init__`` (``_stream``, ``_grpc_connection``, ``_running``,
  ``_flush_event``), on ``SocketWrapper.__aenter__`` (starts ``_writer_thread``; its exit
  callback clears ``_running`` and sets ``_flush_event``), and on ``GRPCSocket.__init__`` /
  ``__aenter__`` (``_socket`` is the wrapper, built in ``__init__``, entered in ``__aenter__``),
  so `_Socket.__init__` can swap in a `_Writer` before anything uses it;
- `_Stream` (the ``StreamClass`` of both sockets, built by ``GRPCSocket._stream_ctor``)
  replaces the anyio memory stream ``GRPCStream.__init__`` makes (``_incoming_events``)
  with an `_EventQueue`, which ``GRPCStream._receive`` and this module read;
- `ClientSocket._reader_thread` extends ``GRPCSocket._reader_thread``: when the connection
  ends it closes every stream's event channel, so a waiting reader raises instead of
  hanging (purerpc never tells its streams);
- `send_messages` repeats ``GRPCStream._send``'s flow-control loop over many messages, using
  ``stream._grpc_connection``, ``stream._socket`` and ``stream._wait_flow_control_update``;
- `receive_messages` repeats ``GRPCProtoStream.receive_message`` / ``GRPCStream._receive``
  over every queued event, using
  ``stream._incoming_events``, ``stream._incoming_message_type``,
  ``stream._start_stream_event`` / ``_end_stream_event`` and the connection's flow control;
- `_Socket._listen` also uses ``_socket``, ``_grpc_connection``, ``_streams``,
  ``_allocate_stream``, ``_receive_buffer_size``, ``stream._set_flow_control_update`` and
  ``stream._close_remote``;
- `close_stream` looks at the stream's h2 state through ``stream._grpc_connection``;
  `forget_stream` removes a stream from ``stream._grpc_socket._streams``.

`PURERPC_VERSION` and `REPLACED_SOURCE_SHA256` record what these were written against;
``tests/test_purerpc_guard.py`` fails when the installed purerpc differs, so an upgrade
is a conscious act: re-read the functions named above, adapt, then update the hashes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc
import h2.exceptions
import trio
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpc_socket import SocketWrapper
from purerpc.grpclib.buffers import MessageWriteBuffer
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.connection import GRPCConnection
from purerpc.grpclib.events import (
    MessageReceived,
    RequestEnded,
    RequestReceived,
    ResponseEnded,
    WindowUpdated,
)
from purerpc.grpclib.status import Status

__all__ = [
    "MAX_OUTBOUND_MESSAGE",
    "PURERPC_VERSION",
    "REPLACED_SOURCE_SHA256",
    "ClientSocket",
    "ServerSocket",
    "close_stream",
    "forget_stream",
    "receive_messages",
    "send_messages",
]

# The purerpc release this module was written against (pinned in pyproject.toml).
PURERPC_VERSION = "0.8.0"
# sha256 of the source of each purerpc function this module replaces or relies on.
REPLACED_SOURCE_SHA256 = {
    "purerpc.grpc_socket.GRPCSocket._listen":
        "0baaac3545b6ad4f8eaeb2001e6f7eb90234ce258ecd6059fe8dd60266e0f221",
    "purerpc.grpc_socket.SocketWrapper.__init__":
        "63a03b48e26fc38ae0bf8354270aba62fd6e9d6b46bf69f2b2c0c87cd73f5856",
    "purerpc.grpc_socket.SocketWrapper.__aenter__":
        "3f0cd9cf6b24bb27b115eba2daa3bbe2c2a2674bdce0bc95b1191bfd6bcaac6f",
    "purerpc.grpc_socket.SocketWrapper._writer_thread":
        "39290fa9988253d6cd9eee2928c0cfb2da358bdeb76795d62fd263f33aff14c7",
    "purerpc.grpc_socket.SocketWrapper.flush":
        "e0340e1031f063196ed14a775ad2dd01cb329c38df0d53f831e1a316c002a430",
    "purerpc.grpc_socket.GRPCSocket.__init__":
        "4f0853b07745a906fdd8fa73ec7e2e73c47f032e46194240ccc86eeee0b72b7b",
    "purerpc.grpc_socket.GRPCSocket.__aenter__":
        "ef69b272a184b9fbe2d2f5c69b73346b54a3df5fc51fcf187d9c76216635c8ca",
    "purerpc.grpc_socket.GRPCSocket._stream_ctor":
        "615676568f824f56ca053d9eaf9120c590ed38fb7899c98a701209f2e1bce39d",
    "purerpc.grpc_socket.GRPCStream.__init__":
        "666cad525c8c5ff88b843611a76f7e39793dbb5aa358bb6075aa81446744f9dc",
    "purerpc.grpc_socket.GRPCSocket._reader_thread":
        "0337e27f49d7835f1f60b4711b4dff70db5344bf6a2c1becf295ffaca51392a1",
    "purerpc.grpc_socket.GRPCStream._send":
        "bde89e911f9814406b9c9c3e84d863f01229549631d0791f980960d3bb3c4191",
    "purerpc.grpc_socket.GRPCStream._receive":
        "abde7a0baa6d89d5dafba457f383ad8c5d4bb94643dd802dde69204c85135258",
    "purerpc.grpc_proto.GRPCProtoStream.receive_message":
        "dcbcc022d632826e6a769ac22f5386c17c5d5ec9d39f7f05259c8f679dc0d2dc",
}

# Largest message sent (an envelope is at most ingress.max_body_bytes plus headers; the
# connection's own limit is for what it receives).
MAX_OUTBOUND_MESSAGE = 32 * 1024 * 1024


class _Writer(SocketWrapper):
    """purerpc's socket writer, woken only when there is something to write.

    purerpc's ``SocketWrapper.flush`` wakes its writer task on every call, and its streams
    flush after everything, including returning flow-control credit that h2 usually turns
    into no frame at all: a scheduler round (and an anyio Event) for nothing, several per
    message. Here ``flush`` takes what h2 has to send at once and wakes the writer only if
    that is something; the writer sends what was taken, in order.
    """

    def __init__(self, grpc_connection: GRPCConnection, stream: anyio.abc.ByteStream) -> None:
        super().__init__(grpc_connection, stream)
        self._pending: list[bytes] = []
        # set by `flush` when it queued data, and (with ``_running`` False) by purerpc's
        # exit callback in ``SocketWrapper.__aenter__``
        self._flush_event = trio.Event()

    async def _writer_thread(self) -> None:
        while True:
            if self._pending:
                self._flush_event = trio.Event()
                data = b"".join(self._pending)
                self._pending.clear()
                await self._stream.send(data)
            elif self._running:
                await self._flush_event.wait()
            else:
                return

    async def flush(self) -> None:
        data = self._grpc_connection.data_to_send()
        if data:
            self._pending.append(data)
            self._flush_event.set()


class _EventQueue:
    """A stream's incoming HTTP/2 events, on trio directly.

    Stands in for both ends of the unbounded anyio memory stream purerpc gives each stream
    (``_incoming_events``), with the same behaviour for what purerpc and this module call:
    ``send_nowait``, ``close`` (the sending side: the reader gets what is queued, then
    `anyio.EndOfStream`), ``receive_nowait`` (`anyio.WouldBlock` when empty) and
    ``receive``. anyio's ``receive`` takes a checkpoint, then, when nothing is queued,
    builds an Event and a typed receiver object and waits: two scheduler rounds and a
    few allocations per message when messages come one at a time. Here ``receive`` is one
    scheduler round: a wait when empty, a checkpoint otherwise.
    """

    def __init__(self) -> None:
        self._items: deque[object] = deque()
        self._closed = False
        self._arrived: trio.Event | None = None  # set when an item arrives or on close

    def send_nowait(self, item: object) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def receive_nowait(self) -> object:
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> object:
        if self._items or self._closed:
            await trio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                if self._arrived is None:
                    self._arrived = trio.Event()
                await self._arrived.wait()


class _Stream(GRPCProtoStream):
    """purerpc's stream, with its incoming events in an `_EventQueue`."""

    _incoming_events: tuple[_EventQueue, _EventQueue]  # (send, receive) ends, as purerpc's

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        # purerpc's anyio memory stream, unused: closed so the GC does not warn about it
        for end in self._incoming_events:
            end.close()
        queue = _EventQueue()
        self._incoming_events = (queue, queue)


class _Socket(GRPCProtoSocket):
    """purerpc's connection with relayd's receive loop and writer (both sides).

    purerpc's ``_listen`` awaits a checkpoint for every HTTP/2 event it hands to a
    stream, so a burst of messages is processed one scheduler round each. The
    streams' event channels are unbounded, so ``send_nowait`` is equivalent without the
    round trip: a whole ``recv()`` worth of events is queued at once and the stream's
    reader takes them as a batch (`receive_messages`). What h2 has to send in answer
    (SETTINGS and PING acks, WINDOW_UPDATEs) is flushed once per ``recv()``.

    Events for a stream no longer in the table (`forget_stream`: its handler is done) are
    dropped, their flow-control credit returned so the connection's other streams go on.
    """

    StreamClass = _Stream

    def __init__(self, config: GRPCConfiguration, sock: anyio.abc.ByteStream) -> None:
        super().__init__(config, sock)
        # replaces the SocketWrapper purerpc made (before anything entered it)
        self._socket = _Writer(self._grpc_connection, sock)

    async def _listen(self) -> AsyncIterator[GRPCProtoStream]:
        while True:
            try:
                data = await self._socket.recv(self._receive_buffer_size)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            events = self._grpc_connection.receive_data(data)
            new_streams: list[GRPCProtoStream] = []
            for event in events:
                if isinstance(event, WindowUpdated):
                    targets = (self._streams.values() if event.stream_id == 0
                               else [self._streams[event.stream_id]]
                               if event.stream_id in self._streams else [])
                    for stream in targets:
                        await stream._set_flow_control_update()
                    continue
                if isinstance(event, RequestReceived):
                    self._allocate_stream(event.stream_id)
                stream = self._streams.get(event.stream_id)
                if stream is None:  # forgotten: nobody reads it any more
                    if isinstance(event, MessageReceived):
                        self._grpc_connection.acknowledge_received_data(
                            event.stream_id, event.flow_controlled_length)
                    continue
                stream._incoming_events[0].send_nowait(event)
                if isinstance(event, RequestReceived):
                    new_streams.append(stream)
                elif isinstance(event, RequestEnded | ResponseEnded):
                    stream._close_remote()
            await self._socket.flush()
            for stream in new_streams:
                yield stream


class ServerSocket(_Socket):
    """purerpc's server-side connection, with relayd's receive loop and writer."""


class ClientSocket(_Socket):
    """purerpc's client-side connection; its streams learn when the connection ends."""

    async def _reader_thread(self) -> None:
        try:
            await super()._reader_thread()
        finally:
            # Wake every stream still waiting for a message: the connection is gone.
            for stream in list(self._streams.values()):
                stream._incoming_events[0].close()


async def send_messages(stream: GRPCProtoStream, messages: Sequence[Message | bytes]) -> None:
    """Send ``messages`` (or already serialized ones) in order, in as few writes as can be."""
    connection = stream._grpc_connection
    buffer = MessageWriteBuffer(connection.config.message_encoding, MAX_OUTBOUND_MESSAGE)
    for message in messages:
        buffer.write_message(message if isinstance(message, bytes)
                             else message.SerializeToString())
    # The same loop as purerpc's GRPCStream._send, over the whole backlog.
    while buffer:
        window = connection.flow_control_window(stream.stream_id)
        if window <= 0:
            await stream._wait_flow_control_update()
            continue
        connection.send_data(stream.stream_id, buffer.data_to_send(min(window, len(buffer))))
        await stream._socket.flush()


async def receive_messages(stream: GRPCProtoStream, max_items: int) -> tuple[list[Message], bool]:
    """Wait for the next message, then take all already received (up to ``max_items``).

    Returns ``(messages, ended)``; ``ended`` is True when the peer ended the stream
    (``stream.end_stream_event`` then holds the end event). Raises what
    ``receive_message`` raises: `google.protobuf.message.DecodeError` for a malformed
    message, `anyio.EndOfStream` when the connection is gone.
    """
    incoming = stream._incoming_events[1]
    events = [await incoming.receive()]
    while len(events) < max_items:
        try:
            events.append(incoming.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    messages: list[Message] = []
    credit = 0
    ended = False
    try:
        for event in events:
            if isinstance(event, MessageReceived):
                credit += event.flow_controlled_length
                message = stream._incoming_message_type()
                message.ParseFromString(event.data)
                messages.append(message)
            elif isinstance(event, RequestEnded | ResponseEnded):
                stream._end_stream_event = event
                ended = True
            else:
                stream._start_stream_event = event
    finally:
        if credit:
            stream._grpc_connection.acknowledge_received_data(stream.stream_id, credit)
            await stream._socket.flush()
    return messages, ended


async def close_stream(stream: GRPCProtoStream, status: Status) -> None:
    """End a server stream with ``status`` (the trailers).

    Raises `h2.exceptions.StreamClosedError` if the peer reset the stream. purerpc ignores
    RST_STREAM and its ``close`` sends the trailers with h2's ``send_headers``, which on a
    stream h2 has already forgotten tries to open a new one and fails with an error that
    is not about the stream (e.g. TooManyStreamsError against a grpcio client).
    """
    h2_stream = stream._grpc_connection.h2_connection.streams.get(stream.stream_id)
    if h2_stream is None or h2_stream.closed:
        raise h2.exceptions.StreamClosedError(stream.stream_id)
    await stream.close(status)


def forget_stream(stream: GRPCProtoStream) -> None:
    """Drop a server stream whose handler is done from its connection's table.

    purerpc forgets a stream only when both sides ended it normally; one the peer reset,
    or one relayd ended first (a replaced hub stream), would stay, with whatever the peer
    still sends on it, as long as the connection lives. `ServerSocket._listen` drops what
    comes for it later.
    """
    stream._grpc_socket._streams.pop(stream.stream_id, None)
