"""The connection manager: at most one authenticated hub at a time.

A new authenticated stream replaces the current one at once: the old stream ends with
ABORTED "replaced by a newer connection" (`HubConnection.end`), and its TCP connection
is closed unless the new stream shares it (a gRPC channel multiplexes its calls). Its
in-flight webhooks leave with it and are read again, in order, for the new one. The
dispatcher waits on `wait_connected` and sends through the `HubConnection` it gets;
`statistics` is the status snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from purerpc.grpclib.status import StatusCode
from trio_util import AsyncValue

from relayd.edge.connection import HubConnection

__all__ = ["REPLACED", "ConnectionManager", "ConnectionStatistics"]

log = logging.getLogger(__name__)

# The reason (and grpc-message) a replaced stream ends with.
REPLACED = "replaced by a newer connection"


@dataclass(frozen=True)
class ConnectionStatistics:
    connected: bool
    hub_id: str | None
    peer: str | None
    connected_since: float | None
    last_seen: float | None
    in_flight: int


class ConnectionManager:
    """Tracks the current hub connection (a singleton)."""

    def __init__(self) -> None:
        self._current: AsyncValue[HubConnection | None] = AsyncValue(None)

    @property
    def current(self) -> HubConnection | None:
        current: HubConnection | None = self._current.value  # (trio_util is untyped)
        return current

    def is_connected(self) -> bool:
        return self._current.value is not None

    async def wait_connected(self) -> HubConnection:
        """Wait until a hub is connected and return its connection."""
        conn: HubConnection | None = await self._current.wait_value(lambda c: c is not None)
        assert conn is not None
        return conn

    async def wait_replaced(self, conn: HubConnection) -> None:
        """Wait until ``conn`` is no longer the current connection."""
        await self._current.wait_value(lambda c: c is not conn)

    def attach(self, conn: HubConnection) -> None:
        """Make ``conn`` the current hub, ending the stream it replaces."""
        old = self._current.value
        self._current.value = conn
        if old is not None:
            log.info("hub connection replaced by a newer one hub_id=%s old_peer=%s new_peer=%s "
                     "requeued=%d", old.hub_id, old.peer, conn.peer, old.in_flight_count())
            old.end(REPLACED, StatusCode.ABORTED)
        log.info("hub connected hub_id=%s peer=%s endpoints=%s capabilities=%s", conn.hub_id,
                 conn.peer, "all" if conn.endpoint_ids is None else sorted(conn.endpoint_ids),
                 sorted(conn.capabilities))

    def detach(self, conn: HubConnection) -> None:
        """``conn`` has ended; forget it if it is still the current one."""
        if self._current.value is conn:
            self._current.value = None
            log.info("hub disconnected hub_id=%s peer=%s reason=%r requeued=%d", conn.hub_id,
                     conn.peer, conn.close_reason or "connection lost", conn.in_flight_count())

    def close_current(self, reason: str) -> None:
        """End the current hub's stream (UNAVAILABLE with ``reason``) and its connection."""
        conn = self._current.value
        if conn is not None:
            conn.end(reason)

    def statistics(self) -> ConnectionStatistics:
        conn = self._current.value
        if conn is None:
            return ConnectionStatistics(False, None, None, None, None, 0)
        return ConnectionStatistics(
            connected=True,
            hub_id=conn.hub_id,
            peer=conn.peer,
            connected_since=conn.connected_since,
            last_seen=conn.last_seen,
            in_flight=conn.in_flight_count(),
        )
