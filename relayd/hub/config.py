"""Load and validate relay-hub's TOML configuration (``[hub]`` and ``[destinations]``).

Unknown keys and bad values raise `ConfigError` naming the key. The secret is read from
``hub.secret_file`` or the ``RELAY_HUB_SECRET`` environment variable, never the TOML.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from relayd.common.tomlconfig import (
    ConfigError,
    build_section,
    read_secret,
    read_toml,
    reject_unknown,
)

__all__ = ["ConfigError", "HubConfig", "HubSettings", "load_hub_config", "parse_hub_config"]

SECRET_ENV = "RELAY_HUB_SECRET"
DEFAULT_EDGE_PORT = 50051


@dataclass(frozen=True)
class HubSettings:
    id: str = "home"
    edge_url: str = "http://127.0.0.1:50051"
    secret_file: Path | None = Path("/etc/relay-hub/hub.secret")
    ca_file: Path | None = None
    endpoint_ids: tuple[str, ...] = ()
    heartbeat_interval: float = 30.0
    stale_timeout: float = 60.0
    max_concurrent_deliveries: int = 16
    delivery_timeout: float = 30.0
    connect_timeout: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    shutdown_grace: float = 5.0
    # Off by default: Home Assistant answers 400 to an X-Forwarded-For from a proxy it was
    # not told to trust (use_x_forwarded_for / trusted_proxies).
    add_forwarded_for: bool = False
    secret: bytes = field(default=b"", repr=False, metadata={"toml": False})


@dataclass(frozen=True)
class HubConfig:
    hub: HubSettings = HubSettings()
    destinations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def edge_host(self) -> str:
        return urlsplit(self.hub.edge_url).hostname or ""

    @property
    def edge_port(self) -> int:
        return urlsplit(self.hub.edge_url).port or DEFAULT_EDGE_PORT

    @property
    def edge_tls(self) -> bool:
        return urlsplit(self.hub.edge_url).scheme == "https"


def load_hub_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None,
                    load_secret: bool = True) -> HubConfig:
    path = Path(path)
    return parse_hub_config(read_toml(path), base_dir=path.parent, environ=environ,
                            load_secret=load_secret)


def parse_hub_config(raw: Mapping[str, Any], *, base_dir: Path = Path("."),
                     environ: Mapping[str, str] | None = None,
                     load_secret: bool = True) -> HubConfig:
    environ = os.environ if environ is None else environ
    reject_unknown("", raw, {"hub", "destinations"})
    hub = build_section(raw, "hub", HubSettings, base_dir)
    if not hub.id:
        raise ConfigError("hub.id: must not be empty")
    _check_edge_url(hub.edge_url)
    if hub.stale_timeout < 2 * hub.heartbeat_interval:
        # With both sides set alike, one late or lost heartbeat must not drop a healthy link.
        raise ConfigError("hub.stale_timeout: must be at least 2 x hub.heartbeat_interval "
                          f"({hub.stale_timeout:g} < 2 x {hub.heartbeat_interval:g})")
    if hub.reconnect_max < hub.reconnect_initial:
        raise ConfigError("hub.reconnect_max: must be >= hub.reconnect_initial")
    if hub.ca_file is not None and not hub.ca_file.is_file():
        raise ConfigError(f"hub.ca_file: {hub.ca_file} is not a readable file")
    if load_secret:
        secret = read_secret(hub.secret_file, file_key="hub.secret_file", env_name=SECRET_ENV,
                             environ=environ)
        hub = dataclasses.replace(hub, secret=secret)
    return HubConfig(hub=hub, destinations=_destinations(raw.get("destinations", {})))


def _check_edge_url(url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 \
            or parts.path not in ("", "/"):
        raise ConfigError(f"hub.edge_url: must be http://host:port or https://host:port, "
                          f"got {url!r}")


def _destinations(table: Any) -> Mapping[str, str]:
    if not isinstance(table, dict):
        raise ConfigError("destinations: must be a table of endpoint_id = URL")
    for endpoint_id, url in table.items():
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"destinations.{endpoint_id}: must be an http(s) URL, got {url!r}")
    return MappingProxyType(dict(table))
