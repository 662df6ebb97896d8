"""The relayd daemon: one root nursery holding every long-running component.

Start order (each one ready before the next): store, activity summary, ack writer,
ingest batcher, dispatcher, retention, store bounds (first disk sample), gRPC server,
admin listener, ingress listener (behind the sender's address and rate limit); then
READY=1 to systemd. `request_shutdown` begins a graceful stop: retention stops (the writer
is kept for what is left to commit), the ingress stops taking requests and finishes the
ones it has, queued webhooks are committed, the dispatcher stops sending, the acks of
webhooks in flight land, then the hub connection is closed, the remaining acks are written
and everything else is cancelled.

The whole graceful stop has one deadline, ``shutdown_grace`` after the request (as
hypercorn's ``graceful_timeout``): when it passes, whatever still waits (a slow request,
an ack the hub never sends, a database that refuses writes) is cancelled with the rest,
and what was not written stays pending, to be delivered again. The store is closed on
every way out; a database statement already waiting on a lock then finishes first (at
most ``store.busy_timeout`` more).
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from relayd.common import systemd
from relayd.common.asgi import ASGIApp
from relayd.common.tls import server_context
from relayd.edge.ack_writer import AckWriter
from relayd.edge.activity import Activity
from relayd.edge.admin import AdminContext, build_admin_app
from relayd.edge.auth import Authenticator
from relayd.edge.capacity import Capacity
from relayd.edge.certs import ServerCertificate
from relayd.edge.client_addr import TrustedProxies, with_client_address
from relayd.edge.config import Config, ConfigError, ListenAddress, load_config
from relayd.edge.dispatcher import Dispatcher
from relayd.edge.handler import RelayStreamHandler
from relayd.edge.http import serve_http
from relayd.edge.ingest import IngestBatcher
from relayd.edge.ingress import IngressApp
from relayd.edge.listen_error import naming_listener
from relayd.edge.manager import ConnectionManager
from relayd.edge.ratelimit import TokenBuckets, rate_limited
from relayd.edge.reload import apply_reload
from relayd.edge.retention import Retention
from relayd.edge.store import AckOutcome, NewWebhook, Store, StoredWebhook, retry_policy
from relayd.transport.guard import PeerGuard
from relayd.transport.server import GrpcServer

__all__ = ["Addresses", "Relayd"]

log = logging.getLogger(__name__)

# The admin listener is on loopback and polled by relayctl or a dashboard: a few suffice.
ADMIN_MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class Addresses:
    """Where the daemon actually listens (ports resolved when configured as 0)."""

    grpc: ListenAddress
    ingress: ListenAddress
    admin: ListenAddress


class Relayd:
    """The edge daemon. ``await nursery.start(relayd.run)`` returns its `Addresses`."""

    def __init__(self, config: Config, *, store_type: type[Store] = Store,
                 config_path: Path | None = None) -> None:
        """``store_type``: the `Store` class to open (one that behaves differently behind
        the same methods may stand in for it). ``config_path``: where `reload` reads the
        config again (None: a reload re-reads the certificates only)."""
        self.config = config
        self._config_path = config_path
        self._store_type = store_type
        self.manager = ConnectionManager()
        self.activity = Activity()
        self.store: Store | None = None
        self.dispatcher: Dispatcher | None = None
        self.ack_writer: AckWriter | None = None
        self.batcher: IngestBatcher | None = None
        self.retention: Retention | None = None
        self.capacity: Capacity | None = None
        self.rate_limit: TokenBuckets | None = None
        self.grpc_server: GrpcServer | None = None
        self.guard: PeerGuard | None = None
        self.addresses: Addresses | None = None
        self._shutdown = trio.Event()
        self._ingress_stop = trio.Event()
        # HTTPS listeners' certificates (by config section), loaded when `run` starts
        self._certificates: dict[str, ServerCertificate] = {}
        # what a config reload updates, once `run` has made them
        self._ingress_app: IngressApp | None = None
        self._stream_handler: RelayStreamHandler | None = None

    def request_shutdown(self) -> None:
        """Begin the graceful stop; `run` returns when it is done."""
        self._shutdown.set()

    @property
    def shutdown_requested(self) -> bool:
        return self._shutdown.is_set()

    def reload(self) -> None:
        """SIGHUP: re-read the config file and the HTTPS certificates.

        Certificates: new connections get the new ones, open connections keep theirs.
        Config: what `relayd.edge.reload` allows is applied, in one step, here; the rest is
        logged as needing a restart. A config that does not load (the error names the key)
        or a certificate that does not load is logged, and the running one kept.
        """
        for certificate in self._certificates.values():
            certificate.reload()
        if self._config_path is None:
            return
        try:
            loaded = load_config(self._config_path)
        except ConfigError as exc:
            log.error("config reload failed, still running the previous config: %s", exc)
            return
        config, needs_restart = apply_reload(self.config, loaded)
        for key in needs_restart:
            log.warning("config reload: %s changed: needs a restart (ignored until then)", key)
        self._apply(config)

    def _apply(self, config: Config) -> None:
        old_ids = {ep.id for ep in self.config.endpoints}
        new_ids = {ep.id for ep in config.endpoints}
        changed = sorted(ep.id for ep in config.endpoints
                         if ep.id in old_ids and self.config.endpoint(ep.id) != ep)
        self.config = config
        if self._ingress_app is not None:
            self._ingress_app.update_endpoints(config.endpoints)
        if self.capacity is not None:
            self.capacity.update_endpoints(config.endpoints)
        if self._stream_handler is not None:
            self._stream_handler.reconfigure(secret=config.hub.secret,
                                             endpoint_ids=sorted(new_ids))
        if self.dispatcher is not None:
            self.dispatcher.update_endpoints(config.endpoints)
        log.info("config reloaded endpoints=%d added=%s removed=%s changed=%s",
                 len(config.endpoints), ",".join(sorted(new_ids - old_ids)) or "-",
                 ",".join(sorted(old_ids - new_ids)) or "-", ",".join(changed) or "-")
        if old_ids - new_ids:
            log.warning("removed endpoints keep their pending webhooks; they are sent again "
                        "if the endpoint comes back: %s", ", ".join(sorted(old_ids - new_ids)))

    def _load_certificates(self) -> None:
        """Raises `CertificateError` (naming the key) for a listener's unusable files."""
        for section, tls in (("ingress", self.config.ingress), ("admin", self.config.admin)):
            if tls.tls_cert is not None and tls.tls_key is not None:
                self._certificates[section] = ServerCertificate(section, tls.tls_cert,
                                                                tls.tls_key)

    def _tls_context(self, section: str) -> Callable[[], ssl.SSLContext] | None:
        certificate = self._certificates.get(section)
        return None if certificate is None else certificate.current

    async def run(self, *, task_status: trio.TaskStatus[Addresses] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        cfg = self.config
        relay = cfg.relay
        async with self._store_type.open(cfg.store.path, retry_policy(relay),
                                         busy_timeout=cfg.store.busy_timeout) as store:
            self.store = store
            self._load_certificates()
            if not cfg.endpoints:
                log.warning("no [[endpoints]] configured: every webhook will be answered 404")
            unverified = [ep.id for ep in cfg.endpoints if ep.verify is None]
            if unverified:
                log.warning("endpoints without sender verification (whoever knows the URL can "
                            "have a webhook stored; see [[endpoints]] verify): %s",
                            ", ".join(unverified))
            await self._warn_orphans(store)
            async with trio.open_nursery() as root:
                dispatcher = self.dispatcher = Dispatcher(
                    store, self.manager, cfg.endpoints, pipeline_window=relay.pipeline_window,
                    poll_interval=relay.poll_interval,
                )
                activity = self.activity

                def on_applied(outcomes: Sequence[AckOutcome]) -> None:
                    activity.acks_applied(outcomes)
                    dispatcher.acks_applied(outcomes)

                def on_stored(webhooks: Sequence[NewWebhook],
                              stored: Sequence[StoredWebhook] | None) -> None:
                    activity.webhooks_stored(webhooks)
                    # wake_on_ingest = false gives the seed's poll-only dispatch (benchmarks).
                    if relay.wake_on_ingest:
                        dispatcher.stored(stored)

                ack_writer = self.ack_writer = AckWriter(store, on_applied)
                batcher = self.batcher = IngestBatcher(store, on_stored=on_stored)
                guard = self.guard = PeerGuard(
                    max_connections=relay.max_connections,
                    max_per_peer=relay.max_connections_per_peer,
                    failures_per_interval=relay.max_failures_per_peer)
                handler = self._stream_handler = RelayStreamHandler(
                    authenticator=Authenticator(cfg.hub.id, cfg.hub.secret, relay.auth_window),
                    manager=self.manager, ack_sink=ack_writer.sink,
                    on_delivered=dispatcher.wake, relay=relay,
                    endpoint_ids=[ep.id for ep in cfg.endpoints], guard=guard,
                )
                # Twice the connect timeout: the stream handler answers a late or bad
                # ConnectRequest first, then the unauthenticated stream (and a socket on
                # which none ever authenticated) is closed. A socket the hub left without
                # a stream is as silent as a stale one.
                tls = None
                if relay.tls_cert is not None and relay.tls_key is not None:
                    tls = server_context(relay.tls_cert, relay.tls_key)
                grpc = self.grpc_server = GrpcServer(
                    relay.grpc_listen, handler, unauthenticated_timeout=2 * relay.connect_timeout,
                    idle_timeout=relay.stale_timeout, guard=guard, ssl_context=tls,
                )

                await root.start(guard.run)
                await root.start(activity.run)  # cancelled last: logs the final summary
                ack_done = await _start_tracked(root, ack_writer.run)
                batcher_done = await _start_tracked(root, batcher.run)
                dispatch_scope = trio.CancelScope()
                await root.start(_run_in_scope, dispatch_scope, dispatcher.run)
                retention = self.retention = Retention(
                    store, keep_delivered=cfg.store.keep_delivered,
                    keep_failed=cfg.store.keep_failed)
                retention_scope = trio.CancelScope()
                await root.start(_run_in_scope, retention_scope, retention.run)
                capacity = self.capacity = Capacity(
                    store, cfg.endpoints, min_free_bytes=cfg.store.min_free_bytes,
                    max_bytes=cfg.store.max_bytes)
                await root.start(capacity.run)
                with naming_listener("relay.grpc_listen", relay.grpc_listen):
                    grpc_address = await root.start(grpc.run)
                with naming_listener("admin.listen", cfg.admin.listen):
                    admin_address = await root.start(self._serve_admin)
                ingress_done = trio.Event()
                with naming_listener("ingress.listen", cfg.ingress.listen):
                    ingress_address = await root.start(self._serve_ingress, batcher,
                                                       capacity, ingress_done)
                self.addresses = Addresses(grpc_address, ingress_address, admin_address)
                log.info("relayd ready grpc=%s ingress=%s admin=%s store=%s endpoints=%d tls=%s "
                         "https=%s", grpc_address, ingress_address, admin_address,
                         cfg.store.path, len(cfg.endpoints), "on" if tls is not None else "off",
                         ",".join(self._certificates) or "off")
                systemd.notify("READY=1")
                interval = systemd.watchdog_interval()
                if interval is not None:
                    root.start_soon(systemd.watchdog_pings, interval)
                task_status.started(self.addresses)

                await self._shutdown.wait()
                started = time.monotonic()
                log.info("relayd shutting down (shutdown_grace=%gs)", relay.shutdown_grace)
                systemd.notify("STOPPING=1")
                # One deadline for every step below; past it the root nursery (this
                # sequence included) is cancelled.
                root.cancel_scope.deadline = trio.current_time() + relay.shutdown_grace
                retention_scope.cancel()
                stage = "finishing open ingress requests"
                self._ingress_stop.set()
                await ingress_done.wait()
                stage = "committing accepted webhooks"
                batcher.close()
                await batcher_done.wait()
                stage = "waiting for the acks of webhooks in flight"
                dispatch_scope.cancel()
                await dispatcher.wait_drained()
                self.manager.close_current("relayd shutting down")
                grpc.abort_all()
                stage = "writing the last acks"
                ack_writer.close()
                await ack_done.wait()
                stage = ""
                root.cancel_scope.cancel()
            if stage:
                # in-flight and unwritten counts were logged as the hub and the ack writer ended
                log.warning("shutdown_grace (%gs) ran out while %s: the rest was cancelled, "
                            "what was not written stays pending", relay.shutdown_grace, stage)
        log.info("relayd stopped after %.2fs of shutdown", time.monotonic() - started)

    def _not_ready(self) -> str | None:
        if self._shutdown.is_set():
            return "shutting down"
        if self.addresses is None:
            return "starting: listeners not bound yet"
        return None

    async def _serve_admin(self, *, task_status: trio.TaskStatus[ListenAddress]) -> None:
        assert self.store is not None and self.dispatcher is not None
        app = build_admin_app(AdminContext(self.config, self.store, self.manager,
                                            dispatch=self.dispatcher,
                                            activity=self.activity,
                                            not_ready=self._not_ready,
                                            current_config=lambda: self.config))
        await serve_http(app, self.config.admin.listen,
                         name="admin", shutdown_trigger=trio.sleep_forever,
                         graceful_seconds=0.5, max_connections=ADMIN_MAX_CONNECTIONS,
                         tls_context=self._tls_context("admin"), task_status=task_status)

    async def _serve_ingress(self, batcher: IngestBatcher, capacity: Capacity,
                             done: trio.Event, *,
                             task_status: trio.TaskStatus[ListenAddress]) -> None:
        cfg = self.config
        ingress = self._ingress_app = IngressApp(
            cfg.endpoints, batcher, max_body_bytes=cfg.ingress.max_body_bytes,
            max_inflight_bytes=cfg.ingress.max_inflight_bytes,
            body_timeout=cfg.ingress.read_timeout, capacity=capacity,
            on_rejected=self.activity.webhook_rejected)
        app: ASGIApp = ingress
        if cfg.ingress.rate:
            self.rate_limit = TokenBuckets(cfg.ingress.rate, cfg.ingress.burst)
            app = rate_limited(app, self.rate_limit)
        app = with_client_address(app, TrustedProxies(cfg.ingress.trusted_proxies,
                                                      cfg.ingress.proxy_header))
        try:
            await serve_http(self.activity.count_responses(app), cfg.ingress.listen,
                             name="ingress",
                             shutdown_trigger=self._ingress_stop.wait,
                             # no grace of its own: the stop deadline in `run` bounds it
                             graceful_seconds=math.inf,
                             max_connections=cfg.ingress.max_connections,
                             read_timeout=cfg.ingress.read_timeout,
                             keep_alive_timeout=cfg.ingress.header_timeout,
                             tls_context=self._tls_context("ingress"),
                             task_status=task_status)
        finally:
            done.set()

    async def _warn_orphans(self, store: Store) -> None:
        orphans = await store.pending_outside([ep.id for ep in self.config.endpoints])
        for endpoint_id, count in orphans.items():
            log.warning("pending webhooks for an endpoint no longer configured stay pending "
                        "endpoint=%s count=%d", endpoint_id, count)


class _Component(Protocol):
    """A component's ``run``: ready once it calls ``task_status.started()``."""

    def __call__(self, *, task_status: trio.TaskStatus[None]) -> Awaitable[None]: ...


async def _start_tracked(nursery: trio.Nursery, fn: _Component) -> trio.Event:
    """Start ``fn`` (a ``run``-style component) and return an event set when it returns."""
    done = trio.Event()

    async def tracked(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await fn(task_status=task_status)
        finally:
            done.set()

    await nursery.start(tracked)
    return done


async def _run_in_scope(scope: trio.CancelScope, fn: _Component, *,
                        task_status: trio.TaskStatus[None]) -> None:
    with scope:
        await fn(task_status=task_status)
