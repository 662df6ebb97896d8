"""Batched sending and receiving on a purerpc stream.

purerpc handles one message at a time through the pure-Python h2 stack: ``send_message``
makes a DATA frame per message, and ``receive_message`` returns flow-control credit (a
WINDOW_UPDATE frame and a socket write) per message. That per-message overhead is most of
the cost of relaying a webhook. When there is a backlog:

- `send_messages` writes all of it as consecutive length-prefixed gRPC messages in as few
  DATA frames as the flow-control window and frame size allow;
- `receive_messages` takes every message already received and returns their credit at once.

The wire format is unchanged (gRPC messages may share or span DATA frames), so the peer
needs nothing special. Both use purerpc 0.8.0 internals (pinned in pyproject).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpclib.buffers import MessageWriteBuffer
from purerpc.grpclib.events import MessageReceived, RequestEnded, ResponseEnded

__all__ = ["BatchStream", "receive_messages", "send_messages"]

# Largest message sent (an envelope is at most ingress.max_body_bytes plus headers; the
# connection's own limit is for what it receives).
MAX_OUTBOUND_MESSAGE = 32 * 1024 * 1024


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


class BatchStream:
    """A purerpc stream used in batches: what `relayd.connection.HubConnection` needs."""

    def __init__(self, stream: GRPCProtoStream) -> None:
        self._stream = stream

    async def send_messages(self, messages: Sequence[Message | bytes]) -> None:
        await send_messages(self._stream, messages)

    async def receive_messages(self, max_items: int) -> tuple[list[Message], bool]:
        return await receive_messages(self._stream, max_items)

    async def receive_message(self) -> Message | None:
        return await self._stream.receive_message()  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._stream.close()

    @property
    def end_stream_event(self) -> object:
        return self._stream.end_stream_event
