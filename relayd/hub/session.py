"""One authenticated stream to the edge, and the tasks that serve it.

The **receiver** reads envelopes and hands each to its endpoint's **lane**: one worker
task per endpoint delivers that endpoint's webhooks one after another, in the order
received, while different endpoints run in parallel under a shared limit
(``max_concurrent_deliveries``). Acks and heartbeats go through one bounded outbound
channel to the **sender**, the only writer on the stream. The **watchdog** ends the
session when the edge has been silent for ``stale_timeout``. A slow destination only
holds its own lane: the receiver keeps reading, heartbeats keep flowing.

Each delivery is logged at DEBUG when it succeeds and at INFO when it fails; at INFO a
summary per endpoint every minute (and at the session's end) counts them (`Tally`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio
from trio_util import AsyncValue

from relayd.common.batching import take_batch
from relayd.common.heartbeat import StaleWatchdog, send_heartbeats
from relayd.common.tally import Tally
from relayd.hub.client import DeliveryClient
from relayd.hub.config import HubSettings
from relayd.hub.delivery import DeliveryResult, deliver
from relayd.hub.recent import RecentIds
from relayd.transport.stream import MessageStream
from relayd.wire import SKIPPED_ERROR, pb

__all__ = ["HubSession"]

log = logging.getLogger(__name__)

# Acks and heartbeats waiting for the sender.
OUTBOUND_BUFFER = 1024
# Envelopes of one endpoint waiting for their turn; the edge's window bounds this.
LANE_BUFFER = 1024
# Most received messages taken (and their flow-control credit returned) at once.
RECEIVE_BATCH_MAX = 256
# Counted per endpoint for the summary: deliveries, failures (transient: the edge sends
# it again; permanent), and redeliveries re-acked without delivering (duplicate).
HUB_EVENTS = ("delivered", "failed_transient", "failed_permanent", "duplicate")


class HubSession:
    """Serves one authenticated stream until the edge ends it, it goes stale, or a stop."""

    def __init__(self, stream: MessageStream[pb.StreamResponse], settings: HubSettings,
                 destinations: Mapping[str, str], client: DeliveryClient, recent: RecentIds,
                 limiter: trio.CapacityLimiter) -> None:
        self._stream = stream
        self._settings = settings
        self._destinations = destinations
        self._client = client
        self._recent = recent
        self._limiter = limiter
        self._outbound_send, self._outbound_receive = trio.open_memory_channel[
            pb.StreamRequest](OUTBOUND_BUFFER)
        self._lanes: dict[str, trio.MemorySendChannel[pb.WebhookEnvelope]] = {}
        self._accepting = True
        self.in_progress = AsyncValue(0)
        self.end_reason = ""
        self._watchdog = StaleWatchdog(settings.stale_timeout, self._on_stale)
        self._nursery: trio.Nursery | None = None
        self._heartbeat_scope = trio.CancelScope()
        self._sender_done = trio.Event()
        self.tally = Tally(HUB_EVENTS, log)

    async def run(self, stop: trio.Event) -> None:
        """Serve until the stream ends; on ``stop``, drain gracefully first."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.tally.run)
            nursery.start_soon(self._sender)
            nursery.start_soon(self._heartbeats)
            await nursery.start(self._watchdog.run)
            nursery.start_soon(self._stop_when, stop)
            await self._receiver()
            nursery.cancel_scope.cancel()

    async def _receiver(self) -> None:
        while True:
            messages, ended = await self._stream.receive_messages(RECEIVE_BATCH_MAX)
            if messages:
                self._watchdog.touch()
            for message in messages:
                if message.HasField("webhook"):
                    await self._accept(message.webhook)
            if ended:
                event = self._stream.end_stream_event
                status = getattr(event, "status", None)
                self.end_reason = self.end_reason or (
                    f"edge ended the stream: {status.status_message or status.status_code.name}"
                    if status is not None else "edge ended the stream")
                return

    async def _accept(self, envelope: pb.WebhookEnvelope) -> None:
        if not self._accepting:
            return  # stopping: not acked, so the edge sends it again later
        if envelope.id in self._recent:
            self.tally.add(envelope.endpoint_id, "duplicate")
            log.debug("duplicate webhook re-acked without delivery webhook_id=%s endpoint=%s",
                      envelope.id, envelope.endpoint_id)
            await self._send_ack(pb.DeliveryAck(webhook_id=envelope.id, success=True,
                                                status_code=200,
                                                error_message="duplicate: already delivered"))
            return
        lane = self._lanes.get(envelope.endpoint_id)
        if lane is None:
            assert self._nursery is not None
            lane, receive = trio.open_memory_channel[pb.WebhookEnvelope](LANE_BUFFER)
            self._lanes[envelope.endpoint_id] = lane
            self._nursery.start_soon(self._lane_worker, envelope.endpoint_id, receive)
        await lane.send(envelope)

    async def _lane_worker(self, endpoint_id: str,
                           receive: trio.MemoryReceiveChannel[pb.WebhookEnvelope]) -> None:
        """Deliver one endpoint's webhooks in order (the ``ordered-pipeline`` promise).

        After a transient failure the lane skips (acks as skipped, does not deliver) what
        follows, until the edge sends again the failed webhook or one it skipped: the edge
        has then rewound, and what comes next is in order again.
        """
        skipping: set[str] | None = None  # ids seen since the failure, while skipping
        async for envelope in receive:
            if not self._accepting:
                continue
            if skipping is not None:
                if envelope.id not in skipping:
                    skipping.add(envelope.id)
                    await self._send_ack(pb.DeliveryAck(
                        webhook_id=envelope.id, success=False, status_code=0,
                        error_message=SKIPPED_ERROR))
                    continue
                skipping = None
            result = await self._deliver(endpoint_id, envelope)
            if not result.success and not result.permanent:
                skipping = {envelope.id}

    async def _deliver(self, endpoint_id: str, envelope: pb.WebhookEnvelope) -> DeliveryResult:
        url = self._destinations.get(endpoint_id) or envelope.destination_url
        self.in_progress.value += 1
        try:
            async with self._limiter:
                result = await deliver(
                    self._client, url, envelope, self._settings.delivery_timeout,
                    add_forwarded_for=self._settings.add_forwarded_for)
        finally:
            self.in_progress.value -= 1
        self._log(envelope, result)
        if result.success:
            self._recent.add(envelope.id)
        await self._send_ack(result.ack(envelope.id))
        return result

    async def _send_ack(self, ack: pb.DeliveryAck) -> None:
        try:
            await self._outbound_send.send(pb.StreamRequest(ack=ack))
        except trio.ClosedResourceError:
            log.info("ack not sent, the stream is closing webhook_id=%s", ack.webhook_id)

    async def _sender(self) -> None:
        try:
            async with self._outbound_receive:
                async for first in self._outbound_receive:
                    # acks that queued up while the last write ran go out in one write
                    batch = take_batch(first, self._outbound_receive, OUTBOUND_BUFFER)
                    await self._stream.send_messages(batch)
        finally:
            self._sender_done.set()

    async def _heartbeats(self) -> None:
        with self._heartbeat_scope:
            await send_heartbeats(self._outbound_send.send, self._settings.heartbeat_interval,
                                  pb.StreamRequest)

    async def _stop_when(self, stop: trio.Event) -> None:
        await stop.wait()
        self._accepting = False
        grace = self._settings.shutdown_grace
        with trio.move_on_after(grace) as scope:
            await self.in_progress.wait_value(0)
            self._heartbeat_scope.cancel()
            self._outbound_send.close()  # the sender flushes the queued acks, then ends
            await self._sender_done.wait()
            await self._stream.close()
        if scope.cancelled_caught:
            log.warning("shutdown grace of %.1fs over with %d deliveries in progress", grace,
                        self.in_progress.value)
        self.end_reason = "hub stopping"
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def _on_stale(self) -> None:
        self.end_reason = "stale: no message from the edge within the stale timeout"
        log.warning("edge connection stale: nothing received for %.1fs",
                    self._settings.stale_timeout)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def _log(self, envelope: pb.WebhookEnvelope, result: DeliveryResult) -> None:
        event = "delivered" if result.success else (
            "failed_permanent" if result.permanent else "failed_transient")
        self.tally.add(envelope.endpoint_id, event)
        level = logging.DEBUG if result.success else logging.INFO
        if not log.isEnabledFor(level):
            return
        outcome = "delivered" if result.success else (
            "failed permanently" if result.permanent else "failed, edge will retry")
        log.log(level, "webhook %s webhook_id=%s endpoint=%s attempt=%d status=%d "
                "duration_ms=%.0f%s", outcome, envelope.id, envelope.endpoint_id,
                envelope.attempt, result.status_code, result.seconds * 1000,
                f" error={result.error!r}" if result.error else "")

