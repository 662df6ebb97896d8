"""An in-test TCP proxy whose established connections can be turned into a black hole."""

from __future__ import annotations

import trio

from relayd.edge.config import ListenAddress


class BlackHoleProxy:
    """Forwards to ``target``; `black_hole` makes current connections swallow all traffic
    without closing (a link that died silently); new connections are forwarded normally."""

    def __init__(self, target: ListenAddress) -> None:
        self.target = target
        self.address: ListenAddress | None = None
        self._holes: list[trio.Event] = []

    def black_hole(self) -> None:
        for hole in self._holes:
            hole.set()

    async def run(self, *, task_status: trio.TaskStatus[ListenAddress]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.address = ListenAddress("127.0.0.1", port)
        task_status.started(self.address)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        hole = trio.Event()
        self._holes.append(hole)
        upstream = await trio.open_tcp_stream(self.target.host, self.target.port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream, hole)
            nursery.start_soon(self._pump, upstream, client, hole)

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream, hole: trio.Event
                    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if not hole.is_set():
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
