"""The dispatcher: pushes pending webhooks to the connected hub, in order per endpoint.

Each round reads, for every endpoint with a free slot, the next pending rows after that
endpoint's cursor (one thread hop for all endpoints) and queues them on the hub
connection; a full connection buffer makes it wait (backpressure), so nothing is dropped:
whatever is not sent stays pending in the database.

Order: an endpoint has at most one webhook in flight, or ``pipeline_window`` when the hub
advertised the ``ordered-pipeline`` capability (it then promises to deliver in order and
to skip, not deliver, what follows a transient failure). The first pending row of an
endpoint gates the rest: if it waits for its retry backoff, nothing behind it goes. A
transient failure (or a "skipped" ack) rewinds the endpoint's cursor to that webhook, so
it and everything after it are sent again, in order, once its backoff has passed.

An operator's retry (`requeueing`) makes a webhook pending again with its old seq, often
behind the cursor: the endpoint is held while that is written, then its cursor moves
back to it, so it goes before anything after it not yet sent (what is already in flight
stays in flight and is not sent twice: see `relayd.edge.lane`).

Live traffic: what the ingress has just committed is handed over in memory (`stored`) and
sent at once, without reading it back, when its endpoint is *caught up*: its last read
came back short (nothing more pending after the cursor) and everything stored since was
handed over. Anything that cannot go that way (window or buffer full, endpoint held, a
move back) clears that state, and the next round reads the endpoint from the database.
A round reads only endpoints that are not caught up, so an ack that frees a slot costs no
read when nothing waits.

Wake-ups: `wake` (an ack landed, something not handed over was stored) starts a round at
once; a round also runs when the earliest backoff ends, and at least every
``poll_interval`` a round reads every endpoint (rows written by another process).

Storage failures (the database locked by another process past ``busy_timeout``, an I/O
error) never end the dispatcher: the failed round or expiry sweep is run again after a
growing pause, logged once when the trouble starts and once when it is over. Nothing is
lost meanwhile: what is not sent stays pending.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TypeVar

import trio
from trio_util import move_on_when

from relayd.edge.config import Endpoint
from relayd.edge.connection import HubConnection
from relayd.edge.envelopes import envelope_head, stream_response
from relayd.edge.lane import Lane
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import AckOutcome, Store, StoredWebhook
from relayd.wire import ORDERED_PIPELINE

__all__ = ["Dispatcher", "envelope_bytes"]

log = logging.getLogger(__name__)

# How often pending webhooks past the maximum age are turned into dead letters.
EXPIRY_SWEEP_SECONDS = 60.0
# Pause before retrying a read or sweep the database refused: doubling from the first value
# up to the cap, so a short lock costs little delay and a long outage little load.
STORAGE_RETRY_INITIAL_SECONDS = 0.1
STORAGE_RETRY_MAX_SECONDS = 5.0

# Webhooks of one endpoint in flight for a hub without ``ordered-pipeline``: one at a time
# is the only way such a hub receives them in order.
UNORDERED_WINDOW = 1

T = TypeVar("T")


def envelope_bytes(webhook: StoredWebhook, destination_url: str) -> bytes:
    """The serialized ``StreamResponse{webhook}`` that delivers ``webhook`` to the hub."""
    head = webhook.envelope_head or envelope_head(
        webhook.id, webhook.endpoint_id, webhook.received_at, webhook.headers,
        method=webhook.method, path=webhook.path, query=webhook.query,
        remote_addr=webhook.remote_addr)
    return stream_response(head, webhook.body, destination_url, webhook.attempts + 1)


class Dispatcher:
    """Sends pending webhooks to the current hub; see the module docstring."""

    def __init__(
        self,
        store: Store,
        manager: ConnectionManager,
        endpoints: Sequence[Endpoint],
        *,
        pipeline_window: int,
        poll_interval: float,
        window: int = UNORDERED_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._manager = manager
        self._endpoints: Mapping[str, Endpoint] = {ep.id: ep for ep in endpoints}
        self._window = window
        self._pipeline_window = pipeline_window
        self._poll_interval = poll_interval
        self._clock = clock
        self._wake_event = trio.Event()
        self._progress = trio.Event()
        self._held: Counter[str] = Counter()  # endpoints being requeued: nothing sent
        # Bumped whenever stored webhooks are left for a read: a round that read before
        # that does not mark the endpoint caught up.
        self._left_for_read = 0
        # Endpoints a round is reading: nothing is handed over to them meanwhile, so a
        # webhook is never both handed over and read for sending.
        self._reading: set[str] = set()
        self.rounds = 0
        self.handed_over = 0  # webhooks sent straight from `stored`

    def wake(self) -> None:
        """Run a dispatch round now (new webhooks stored, or an ack applied)."""
        self._wake_event.set()

    def stored(self, webhooks: Sequence[StoredWebhook] | None) -> None:
        """The ingress committed ``webhooks`` (in seq order): send each at once if its
        endpoint is caught up and has room, else leave it for a read (a round starts).
        None: committed webhooks whose seqs are unknown; every endpoint is read again."""
        conn = self._manager.current
        if conn is None:
            return  # the next connection starts with a read of every endpoint
        if webhooks is None:
            for lane in conn.lanes.values():
                lane.caught_up = False
            self._leave_for_read()
            return
        window = self.window_for(conn)
        endpoints = self._endpoints
        for webhook in webhooks:
            found = conn.lanes.get(webhook.endpoint_id)
            if found is None:  # never read on this connection: a round reads it
                if conn.serves(webhook.endpoint_id):
                    self._leave_for_read()
                continue
            lane = found
            if webhook.seq <= lane.cursor:
                continue  # a round read it already (and sent it, or passed over it)
            if not (lane.caught_up and len(lane.in_flight) < window
                    and webhook.endpoint_id not in self._reading
                    and webhook.endpoint_id in endpoints
                    and webhook.endpoint_id not in self._held
                    and self._send_now(conn, lane, webhook,
                                       endpoints[webhook.endpoint_id].destination_url)):
                lane.caught_up = False
                self._leave_for_read()

    def reread(self, endpoint_id: str) -> None:
        """Something of ``endpoint_id`` became pending outside the ingress (an operator's
        replay): read it in a round now."""
        conn = self._manager.current
        lane = None if conn is None else conn.lanes.get(endpoint_id)
        if lane is not None:
            lane.caught_up = False
        self._leave_for_read()

    def _leave_for_read(self) -> None:
        self._left_for_read += 1
        self.wake()

    def _send_now(self, conn: HubConnection, lane: Lane, webhook: StoredWebhook,
                  destination: str) -> bool:
        """Queue ``webhook`` on ``conn`` without waiting; False if its buffer is full."""
        try:
            if not conn.send_nowait(envelope_bytes(webhook, destination)):
                return False
        except trio.BrokenResourceError:
            return False
        lane.push(webhook)
        self.handed_over += 1
        log.debug("sent webhook_id=%s endpoint=%s attempt=%d hub_id=%s",
                  webhook.id, webhook.endpoint_id, webhook.attempts + 1, conn.hub_id)
        return True

    def update_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Send for ``endpoints`` from the next round on (config reload). A removed
        endpoint's pending webhooks stay pending (what is in flight still gets its ack);
        they are sent again if it comes back. A changed destination_url applies to what
        is sent from now on."""
        self._endpoints = {ep.id: ep for ep in endpoints}
        self.wake()

    @contextmanager
    def requeueing(self, endpoint_id: str) -> Iterator[Callable[[int], None]]:
        """Hold ``endpoint_id`` while some of its webhooks are made pending again.

        Nothing of it is sent inside the block (a round in progress stops too); call the
        yielded function with the seq of each webhook made pending. On the way out the
        endpoint's next read on the current connection starts at the lowest of them, so
        they are sent before anything after them not yet sent, and a round starts.
        """
        lowest: int | None = None

        def requeued(seq: int) -> None:
            nonlocal lowest
            lowest = seq if lowest is None else min(lowest, seq)

        self._held[endpoint_id] += 1
        try:
            yield requeued
        finally:
            self._held[endpoint_id] -= 1
            if not self._held[endpoint_id]:
                del self._held[endpoint_id]
            conn = self._manager.current
            lane = None if conn is None else conn.lanes.get(endpoint_id)
            if lane is not None and lowest is not None:
                lane.reread_from(lowest)
            self.wake()

    def in_flight(self) -> dict[str, list[str]]:
        """The ids in flight on the current connection, per endpoint, in send order."""
        conn = self._manager.current
        if conn is None:
            return {}
        return {endpoint_id: [w.id for w in lane.in_flight]
                for endpoint_id, lane in conn.lanes.items() if lane.in_flight}

    def acks_applied(self, outcomes: Sequence[AckOutcome]) -> None:
        """Free the in-flight slots of applied acks; rewind on a transient failure."""
        conn = self._manager.current
        if conn is not None:
            for outcome in outcomes:
                lane = conn.lanes.get(outcome.endpoint_id or "")
                if lane is not None:
                    _settle(lane, outcome)
        self._progress.set()
        self._progress = trio.Event()
        self.wake()

    def window_for(self, conn: HubConnection) -> int:
        """How many webhooks of one endpoint may be in flight on ``conn``."""
        if ORDERED_PIPELINE in conn.capabilities:
            return self._pipeline_window
        return self._window

    async def wait_drained(self) -> None:
        """Wait until nothing is in flight (or no hub is connected)."""
        while True:
            conn = self._manager.current
            if conn is None or conn.in_flight_count() == 0:
                return
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire_forever)
            task_status.started()
            while True:
                conn = await self._manager.wait_connected()
                async with move_on_when(conn.closed.wait):
                    await self._serve(conn)
                await self._manager.wait_replaced(conn)

    async def _serve(self, conn: HubConnection) -> None:
        next_full = -math.inf
        while True:
            self._wake_event = trio.Event()
            # every poll_interval, read caught-up endpoints too (another process's rows)
            full = trio.current_time() >= next_full
            if full:
                next_full = trio.current_time() + self._poll_interval
            next_due = await _until_database_answers("reading pending webhooks",
                                                     partial(self._round, conn, full))
            self.rounds += 1
            delay = min(next_full - trio.current_time(), next_due - self._clock())
            with trio.move_on_after(max(delay, 0.0)):
                await self._wake_event.wait()

    async def _round(self, conn: HubConnection, full: bool = True) -> float:
        """Send what may go now; return when the earliest waiting backoff ends.

        Reads the endpoints that are not caught up, or all of them if ``full``.
        """
        wanted: list[tuple[str, int, int]] = []
        generations: dict[str, int] = {}
        endpoints = self._endpoints  # the round's, even if a reload replaces them meanwhile
        for endpoint_id in endpoints:
            if not conn.serves(endpoint_id) or endpoint_id in self._held:
                continue
            lane = conn.lanes.setdefault(endpoint_id, Lane())
            slots = self.window_for(conn) - len(lane.in_flight)
            if slots > 0 and (full or not lane.caught_up):
                wanted.append((endpoint_id, lane.cursor, slots))
                generations[endpoint_id] = lane.generation
        if not wanted:
            return math.inf
        left_for_read = self._left_for_read
        self._reading = {endpoint_id for endpoint_id, _, _ in wanted}
        try:
            return await self._send_read(conn, wanted, generations, endpoints,
                                         left_for_read)
        finally:
            self._reading = set()

    async def _send_read(self, conn: HubConnection, wanted: Sequence[tuple[str, int, int]],
                         generations: Mapping[str, int], endpoints: Mapping[str, Endpoint],
                         left_for_read: int) -> float:
        """Read ``wanted`` and send what may go now (see `_round`)."""
        rows = await self._store.next_pending(wanted)
        now = self._clock()
        next_due = math.inf
        for (endpoint_id, _, limit) in wanted:
            webhooks = rows.get(endpoint_id, [])
            lane = conn.lanes[endpoint_id]
            destination = endpoints[endpoint_id].destination_url
            # Caught up if the read came back short and all of it was taken, and nothing
            # stored meanwhile was left for a read.
            caught_up = len(webhooks) < limit
            for webhook in webhooks:
                if lane.generation != generations[endpoint_id] or conn.closed.is_set() \
                        or endpoint_id in self._held:
                    caught_up = False
                    break  # rewound, held or gone while we were sending: re-read next round
                if lane.is_sent(webhook.id):
                    # read again after the cursor moved back: it is on its way already
                    lane.pass_over(webhook)
                    caught_up = False
                    self.wake()  # the read's room went to it: read on at once
                    continue
                if webhook.next_attempt_at > now:
                    next_due = min(next_due, webhook.next_attempt_at)
                    caught_up = False
                    break
                lane.push(webhook)
                data = envelope_bytes(webhook, destination)
                try:
                    # Queue without a checkpoint while there is room, so the sender finds
                    # the round's backlog and writes it at once; wait when full.
                    if not conn.send_nowait(data):
                        await conn.send(data)
                except trio.BrokenResourceError:
                    return math.inf
                log.debug("sent webhook_id=%s endpoint=%s attempt=%d hub_id=%s",
                          webhook.id, endpoint_id, webhook.attempts + 1, conn.hub_id)
            if caught_up and self._left_for_read == left_for_read \
                    and lane.generation == generations[endpoint_id]:
                lane.caught_up = True
        return next_due

    async def _expire_forever(self) -> None:
        while True:
            await _until_database_answers("the expiry sweep", self._expire)
            await trio.sleep(EXPIRY_SWEEP_SECONDS)

    async def _expire(self) -> None:
        conn = self._manager.current
        in_flight = [w.id for lane in conn.lanes.values() for w in lane.in_flight] \
            if conn is not None else []
        expired = await self._store.expire_pending(self._clock(), exclude=in_flight)
        for webhook_id in expired:
            log.warning("webhook dead-lettered: undelivered past the maximum age "
                        "webhook_id=%s", webhook_id)


async def _until_database_answers(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` until the database accepts it, pausing longer after each refusal.

    The first `sqlite3.Error` of an episode is logged as a warning with the error, the
    next ones only at debug level, and the recovery once.
    """
    delay = STORAGE_RETRY_INITIAL_SECONDS
    failures = 0
    while True:
        try:
            result = await attempt()
        except sqlite3.Error as exc:
            failures += 1
            if failures == 1:
                log.warning("dispatcher: %s failed, retrying until the database answers: "
                            "%s: %s", what, type(exc).__name__, exc)
            else:
                log.debug("dispatcher: %s failed again (attempt %d), retrying in %.1fs: %s: %s",
                          what, failures, delay, type(exc).__name__, exc)
            await trio.sleep(delay)
            delay = min(2 * delay, STORAGE_RETRY_MAX_SECONDS)
            continue
        if failures:
            log.info("dispatcher: %s works again after %d failed attempts", what, failures)
        return result


# Outcomes after which the endpoint restarts from that webhook: it (if still pending) and
# everything after it are sent again. "dead_letter" comes from a transient failure too, and
# a pipelining hub skips what follows it until something is sent again.
REWIND_OUTCOMES = frozenset({"retry", "skipped", "dead_letter"})


def _settle(lane: Lane, outcome: AckOutcome) -> None:
    """Apply one ack outcome to an endpoint's in-flight state on the current connection."""
    webhook_id = outcome.webhook_id
    lane.settled(webhook_id)
    if lane.consume_orphan(webhook_id) or not lane.holds(webhook_id):
        # The ack of a copy dropped by a rewind, or of one already released on arrival or
        # sent on an older connection: nothing in flight to change.
        return
    if outcome.outcome in REWIND_OUTCOMES:
        lane.rewind_to(webhook_id)
    else:
        lane.release(webhook_id)
