"""`AdminContext`: what the admin handlers may reach of a running relayd."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from relayd.edge.activity import Activity
from relayd.edge.config import Config
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import Store

__all__ = ["AdminContext", "DispatchControl", "NoDispatch"]


class DispatchControl(Protocol):
    """What the admin API asks of the dispatcher (`relayd.edge.dispatcher.Dispatcher`)."""

    def reread(self, endpoint_id: str) -> None:
        """Something of ``endpoint_id`` became pending (a replay): read it in a round now."""

    def requeueing(self, endpoint_id: str) -> AbstractContextManager[Callable[[int], None]]:
        """Hold ``endpoint_id`` while webhooks are made pending again; the yielded function
        takes the seq of each, and they go first on the way out."""
        ...

    def in_flight(self) -> dict[str, list[str]]:
        """Ids sent to the hub and not yet acked, per endpoint."""
        ...


class NoDispatch:
    """No dispatcher: an admin app built on its own (a test of the listener alone)."""

    def reread(self, endpoint_id: str) -> None:
        pass

    @contextmanager
    def requeueing(self, endpoint_id: str) -> Iterator[Callable[[int], None]]:
        yield lambda seq: None

    def in_flight(self) -> dict[str, list[str]]:
        return {}


@dataclass(frozen=True)
class AdminContext:
    """The parts of a running relayd the admin listener serves."""

    config: Config
    store: Store
    manager: ConnectionManager
    dispatch: DispatchControl = field(default_factory=NoDispatch)
    clock: Callable[[], float] = field(default=time.time)
    # What the daemon counted (ingest, acks, ingress answers), for /metrics.
    activity: Activity = field(default_factory=Activity)
    # Why relayd should not get traffic (starting, stopping), or None (/readyz).
    not_ready: Callable[[], str | None] = lambda: None
    # The config as last (re)loaded (SIGHUP: endpoints come and go); None: `config` stays.
    current_config: Callable[[], Config] | None = None

    def live_config(self) -> Config:
        """The config now: the one a reload made, else the one relayd started with. What
        only a restart changes (the listener, its token) is read from `config`."""
        return self.config if self.current_config is None else self.current_config()
