"""What a config reload (SIGHUP) may change in a running relayd, and what needs a restart.

Applied at once: the ``[[endpoints]]`` (added, removed, or with a new destination_url,
verify or max_pending; verification secrets are re-read) and the hub secret (new
ConnectRequests are checked against it; the connected hub stays). Every other key is
bound to something made once at start (listening sockets, the store, timers of open
connections): a change is reported as needing a restart and the running value is kept.
"""

from __future__ import annotations

import dataclasses

from relayd.edge.config import Config

__all__ = ["LIVE_HUB_KEYS", "apply_reload"]

# The [hub] keys a reload applies: the secret, and where it is read from.
LIVE_HUB_KEYS = ("secret", "secret_file")


def apply_reload(running: Config, loaded: Config) -> tuple[Config, list[str]]:
    """The config to run with after loading ``loaded``, and the keys (``section.key``)
    whose change in ``loaded`` was not applied because it needs a restart."""
    needs_restart = []
    for section in dataclasses.fields(Config):
        if section.name == "endpoints":
            continue
        old, new = getattr(running, section.name), getattr(loaded, section.name)
        for key in dataclasses.fields(old):
            if section.name == "hub" and key.name in LIVE_HUB_KEYS:
                continue
            if getattr(old, key.name) != getattr(new, key.name):
                needs_restart.append(f"{section.name}.{key.name}")
    hub = dataclasses.replace(running.hub, **{key: getattr(loaded.hub, key)
                                              for key in LIVE_HUB_KEYS})
    return dataclasses.replace(running, hub=hub, endpoints=loaded.endpoints), needs_restart
