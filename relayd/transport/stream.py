"""The hub stream as both daemons use it: messages sent and received in batches.

purerpc handles one message at a time through the pure-Python h2 stack: ``send_message``
makes a DATA frame per message, and ``receive_message`` returns flow-control credit (a
WINDOW_UPDATE frame and a socket write) per message. That per-message overhead is most of
the cost of relaying a webhook. `BatchStream` instead writes a backlog as consecutive
gRPC messages in as few DATA frames as flow control allows, and takes every message
already received at once, returning their credit together. The wire format is unchanged
(gRPC messages may share or span DATA frames), so the peer needs nothing special.

A write on a stream the peer reset (RST_STREAM, e.g. a gRPC client cancelling its call)
raises `StreamReset`: purerpc does not report the reset itself, so that is the first sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar, cast

import anyio
import h2.exceptions
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoStream

from relayd.transport import _purerpc

__all__ = ["BatchStream", "MessageStream", "StreamReset"]


class StreamReset(anyio.BrokenResourceError):
    """The peer reset the stream: nothing more can be sent on it (the connection is fine).

    A BrokenResourceError, so code that treats a broken stream as a lost link still does.
    """

# The message type a stream receives: the edge receives StreamRequest, the hub StreamResponse.
ReceiveT = TypeVar("ReceiveT", bound=Message)


class MessageStream(Protocol[ReceiveT]):
    """A gRPC stream used in batches (`BatchStream`; fakes in tests)."""

    async def send_messages(self, messages: Sequence[Message | bytes]) -> None: ...
    async def receive_messages(self, max_items: int) -> tuple[list[ReceiveT], bool]: ...
    async def receive_message(self) -> ReceiveT | None: ...
    async def send_message(self, message: Message) -> None: ...
    async def close(self) -> None: ...
    @property
    def end_stream_event(self) -> object: ...


class BatchStream(Generic[ReceiveT]):
    """A purerpc stream used in batches; see the module docstring.

    ``ReceiveT`` is the message type purerpc decodes on ``stream`` (the method's request
    type on the server, the ``expect_message_type`` on the client).
    """

    def __init__(self, stream: GRPCProtoStream) -> None:
        self._stream = stream

    async def send_messages(self, messages: Sequence[Message | bytes]) -> None:
        """Send ``messages`` (or already serialized ones) in order, in as few writes as can be.

        Raises `StreamReset` if the peer reset the stream.
        """
        try:
            await _purerpc.send_messages(self._stream, messages)
        except h2.exceptions.StreamClosedError as exc:
            raise StreamReset(f"stream {self._stream.stream_id} reset by the peer") from exc

    async def send_message(self, message: Message) -> None:
        await self.send_messages((message,))

    async def receive_messages(self, max_items: int) -> tuple[list[ReceiveT], bool]:
        """Wait for a message, then take all already received (up to ``max_items``).

        Returns ``(messages, ended)``; see `relayd.transport._purerpc.receive_messages`.
        """
        received = await _purerpc.receive_messages(self._stream, max_items)
        # decoded with the stream's message type, so each one is a ReceiveT
        return cast(tuple[list[ReceiveT], bool], received)

    async def receive_message(self) -> ReceiveT | None:
        """The next message, or None when the peer ended the stream."""
        message: ReceiveT | None = await self._stream.receive_message()
        return message

    async def close(self) -> None:
        await self._stream.close()

    @property
    def end_stream_event(self) -> object:
        return self._stream.end_stream_event
