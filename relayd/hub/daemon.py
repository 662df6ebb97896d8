"""The relay-hub daemon: connect out, authenticate, serve a session, reconnect forever.

After any failure (refused, rejected, dropped, stale) it waits an exponential backoff with
full jitter (``reconnect_initial`` up to ``reconnect_max``), reset after a connection that
stayed up for `STABLE_SECONDS`. `request_stop` drains the current session (deliveries in
progress finish within ``shutdown_grace`` and are acked) and `run` returns.

When the handshake fails in a way that hints at a wrong ``hub.edge_url`` (something else
than relayd's gRPC port answered), the hub probes it once per failure episode (until a
connection succeeds) and, if it is not relayd, says so instead of the protocol error.
"""

from __future__ import annotations

import logging
import ssl
import time

import anyio
import h2.exceptions
import trio
from purerpc.grpclib.exceptions import GRPCError

from relayd.common.runner import describe, leaves
from relayd.common.signing import sign
from relayd.common.tls import client_context
from relayd.hub.backoff import Backoff
from relayd.hub.client import DeliveryClient
from relayd.hub.config import HubConfig
from relayd.hub.probe import HANDSHAKE_ERRORS, NOT_RELAYD, not_relayd
from relayd.hub.recent import RecentIds
from relayd.hub.session import HubSession
from relayd.transport.client import open_relay_stream
from relayd.transport.stream import MessageStream
from relayd.wire import ORDERED_PIPELINE, pb

__all__ = ["CONNECTION_ERRORS", "Rejected", "RelayHub", "authenticate"]

log = logging.getLogger(__name__)

# A connection that stayed up this long resets the reconnect backoff.
STABLE_SECONDS = 30.0
# Webhook ids remembered to re-ack redeliveries without delivering twice.
RECENT_IDS = 10_000
# "ordered-pipeline": the edge may keep many webhooks of one endpoint in flight; this hub
# delivers them in order and skips what follows a transient failure (see session.py).
CAPABILITIES: tuple[str, ...] = (ORDERED_PIPELINE,)

# What a lost or refused connection raises; anything else is a bug and stops the hub.
CONNECTION_ERRORS = (
    OSError,  # refused, reset, unreachable, TLS errors (ssl.SSLError)
    anyio.EndOfStream,  # the connection closed under a stream (ConnectionLost)
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    GRPCError,  # purerpc protocol errors, including a reset stream
    h2.exceptions.H2Error,
    trio.TooSlowError,  # connect or ConnectResponse timeout
)


class Rejected(Exception):
    """The edge refused the ConnectRequest; ``args[0]`` is its reason."""


async def authenticate(stream: MessageStream[pb.StreamResponse], config: HubConfig,
                       timestamp: int) -> None:
    """Send the ConnectRequest and wait for a successful ConnectResponse."""
    hub = config.hub
    await stream.send_message(pb.StreamRequest(connect=pb.ConnectRequest(
        hub_id=hub.id, timestamp=timestamp, signature=sign(hub.secret, hub.id, timestamp),
        endpoint_ids=list(hub.endpoint_ids), capabilities=list(CAPABILITIES),
    )))
    with trio.fail_after(hub.connect_timeout):
        message = await stream.receive_message()
    if message is None:
        status = getattr(stream.end_stream_event, "status", None)
        raise Rejected(status.status_message if status is not None else "stream ended")
    if message.WhichOneof("message") != "connect_response":
        raise Rejected(f"edge sent {message.WhichOneof('message')} before ConnectResponse")
    if not message.connect_response.success:
        raise Rejected(message.connect_response.error or "no reason given")


class RelayHub:
    """The hub daemon; ``await nursery.start(hub.run)``."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.session: HubSession | None = None
        self.connections = 0
        self.recent = RecentIds(RECENT_IDS)
        self._stop = trio.Event()
        self.stopped = trio.Event()
        self._last_timestamp = 0
        # the wrong-port probe: done in this failure episode yet, and what it found
        self._probed = False
        self._not_relayd: str | None = None

    def request_shutdown(self) -> None:
        """Drain the current session and stop; `run` returns when done."""
        self._stop.set()

    def ssl_context(self) -> ssl.SSLContext | None:
        return client_context(self.config.hub.ca_file) if self.config.edge_tls else None

    async def next_timestamp(self) -> int:
        """Now in Unix seconds, never reused: the edge rejects a repeated one as a replay."""
        now = int(time.time())
        if now <= self._last_timestamp:
            await trio.sleep(self._last_timestamp + 1 - time.time())
            now = self._last_timestamp + 1
        self._last_timestamp = now
        return now

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            await self._run(task_status)
        finally:
            self.stopped.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        hub = self.config.hub
        backoff = Backoff(hub.reconnect_initial, hub.reconnect_max)
        limiter = trio.CapacityLimiter(hub.max_concurrent_deliveries)
        tls = self.ssl_context()
        # as many connections as deliveries at once (the limiter), each kept for the next
        with DeliveryClient(max_idle=hub.max_concurrent_deliveries) as client:
            log.info("relay-hub started hub_id=%s edge=%s endpoints=%s", hub.id, hub.edge_url,
                     list(hub.endpoint_ids) or "all")
            task_status.started()
            while not self._stop.is_set():
                up_since: float | None = None
                reason = ""
                handshake_failed = False
                try:
                    async with open_relay_stream(self.config.edge_host, self.config.edge_port,
                                                 ssl_context=tls,
                                                 connect_timeout=hub.connect_timeout) as stream:
                        await authenticate(stream, self.config, await self.next_timestamp())
                        up_since = trio.current_time()
                        self.connections += 1
                        log.info("connected to the edge hub_id=%s edge=%s", hub.id, hub.edge_url)
                        self.session = HubSession(stream, hub,
                                                  self.config.destinations, client,
                                                  self.recent, limiter)
                        await self.session.run(self._stop)
                        reason = self.session.end_reason
                except* Rejected as group:
                    reason = f"rejected by the edge: {leaves(group)[0]}"
                except* CONNECTION_ERRORS as group:
                    reason = "; ".join(describe(e) for e in leaves(group))
                    handshake_failed = up_since is None and any(
                        isinstance(e, HANDSHAKE_ERRORS) for e in leaves(group))
                finally:
                    self.session = None
                if self._stop.is_set():
                    break
                if up_since is not None:
                    self._probed, self._not_relayd = False, None  # a new failure episode
                    if trio.current_time() - up_since >= STABLE_SECONDS:
                        backoff.reset()
                elif handshake_failed:
                    reason = await self._explain_handshake_failure(reason)
                delay = backoff.next_delay()
                log.warning("not connected to the edge (%s); retrying in %.1fs", reason, delay)
                with trio.move_on_after(delay):
                    await self._stop.wait()
        log.info("relay-hub stopped")

    async def _explain_handshake_failure(self, reason: str) -> str:
        """``reason``, or that ``hub.edge_url`` is not relayd's gRPC port if a probe (once per
        failure episode) found so; the finding and how to fix it are logged once."""
        hub = self.config.hub
        if not self._probed:
            self._probed = True
            with trio.move_on_after(hub.connect_timeout):
                self._not_relayd = await not_relayd(hub.edge_url, hub.ca_file)
            if self._not_relayd:
                log.error("%s: %s", hub.edge_url, NOT_RELAYD.format(answer=self._not_relayd))
        return f"not a relayd gRPC port: {self._not_relayd}" if self._not_relayd else reason

