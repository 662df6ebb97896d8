"""`AdminContext`: what the admin handlers may reach of a running relayd."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from relayd.edge.activity import Activity
from relayd.edge.config import Config
from relayd.edge.manager import ConnectionManager
from relayd.edge.store import Store

__all__ = ["AdminContext"]


@dataclass(frozen=True)
class AdminContext:
    """The parts of a running relayd the admin listener serves."""

    config: Config
    store: Store
    manager: ConnectionManager
    # Starts a dispatch round now (after a retry or replay queued something).
    wake_dispatcher: Callable[[], None] = lambda: None
    clock: Callable[[], float] = field(default=time.time)
    # What the daemon counted (ingest, acks, ingress answers), for /metrics.
    activity: Activity = field(default_factory=Activity)
    # Why relayd should not get traffic (starting, stopping), or None (/readyz).
    not_ready: Callable[[], str | None] = lambda: None
