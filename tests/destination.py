"""Local HTTP destinations for hub tests: they record requests and answer from a script.

`Destination` is an ASGI app (hypercorn); `RawDestination` reads HTTP/1.1 with h11 and
keeps the request line byte for byte, which ASGI cannot show (it splits the target into
path and query and drops a "?" with nothing after it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio

from relayd.edge.config import ListenAddress
from relayd.edge.http import Receive, Scope, Send, handle_lifespan, serve_http


@dataclass(frozen=True)
class Received:
    path: str
    method: str
    headers: dict[str, str]
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    answered: int


class Destination:
    """``statuses[path]`` are answered in turn (then 200); ``delays[path]`` slow a path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: dict[str, list[int]] = defaultdict(list)
        self.delays: dict[str, float] = {}
        # answers a request once its path's script is used up (default: 200)
        self.decide: Callable[[str], int] = lambda path: 200
        self.changed = trio.Event()
        self.address: ListenAddress | None = None

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def bodies(self, path: str) -> list[bytes]:
        return [r.body for r in self.received if r.path == path and 200 <= r.answered < 300]

    async def wait_count(self, predicate: object, within: float = 10.0) -> None:
        """Wait until ``predicate(self)`` is true (re-checked on each request)."""
        with trio.fail_after(within):
            while not predicate(self):  # type: ignore[operator]
                await self.changed.wait()

    async def serve(self, *, task_status: trio.TaskStatus[ListenAddress]) -> None:
        async def started_address(*, task_status: trio.TaskStatus[ListenAddress]) -> None:
            await serve_http(self.app, ListenAddress("127.0.0.1", 0), name="destination",
                             shutdown_trigger=trio.sleep_forever, graceful_seconds=0.1,
                             task_status=task_status)

        async with trio.open_nursery() as nursery:
            self.address = await nursery.start(started_address)
            task_status.started(self.address)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path in self.delays:
            await trio.sleep(self.delays[path])
        script = self.statuses[path]
        status = script.pop(0) if script else self.decide(path)
        raw = list(scope["headers"])
        self.received.append(Received(
            path, scope["method"], {k.decode("latin-1"): v.decode("latin-1") for k, v in raw},
            raw, b"".join(chunks), status))
        self.changed.set()
        self.changed = trio.Event()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@dataclass(frozen=True)
class RawRequest:
    method: bytes
    target: bytes  # the request target exactly as it stood in the request line
    headers: list[tuple[bytes, bytes]]  # names as sent (h11 keeps their case), in order
    body: bytes


class RawDestination:
    """An HTTP/1.1 server that records each request line as it was sent; answers ``status``."""

    def __init__(self) -> None:
        self.received: list[RawRequest] = []
        self.status = 200
        self.changed = trio.Event()
        self.address: ListenAddress | None = None

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    async def wait_count(self, count: int, within: float = 10.0) -> None:
        """Wait until ``count`` requests were received."""
        with trio.fail_after(within):
            while len(self.received) < count:
                await self.changed.wait()

    async def serve(self, *, task_status: trio.TaskStatus[ListenAddress]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = ListenAddress("127.0.0.1", int(listeners[0].socket.getsockname()[1]))
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.address)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        async with stream:
            while True:
                try:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        request, body = event, b""
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage) and request is not None:
                        await self._answer(stream, conn, request, body)
                        conn.start_next_cycle()
                    else:  # the client closed the connection
                        return
                except (h11.ProtocolError, trio.BrokenResourceError):
                    return

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection,
                      request: h11.Request, body: bytes) -> None:
        self.received.append(RawRequest(request.method, request.target,
                                        list(request.headers.raw_items()), body))
        self.changed.set()
        self.changed = trio.Event()
        for event in (h11.Response(status_code=self.status, headers=[("content-length", "0")]),
                      h11.EndOfMessage()):
            await stream.send_all(conn.send(event) or b"")
