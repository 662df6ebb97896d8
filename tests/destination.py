"""A local HTTP destination for hub tests: records requests, answers from a script."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

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
