"""Load and validate relayd's TOML configuration.

Every section is a frozen dataclass. Unknown keys and bad values raise `ConfigError`
naming the key (``relay.stale_timeout: must be > 0``). Durations are seconds (floats
allowed). The hub secret never lives in the TOML: it is read from ``hub.secret_file`` or
the ``RELAYD_HUB_SECRET`` environment variable, and is kept out of ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "Endpoint",
    "HubConfig",
    "IngressConfig",
    "ListenAddress",
    "RelayConfig",
    "StoreConfig",
    "load_config",
    "parse_config",
]

SECRET_ENV = "RELAYD_HUB_SECRET"
ENDPOINT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the reason."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RelayConfig:
    grpc_listen: ListenAddress = ListenAddress("0.0.0.0", 50051)
    heartbeat_interval: float = 30.0
    stale_timeout: float = 60.0
    auth_window: float = 300.0
    connect_timeout: float = 10.0
    buffer_size: int = 1000
    window: int = 1
    retry_initial: float = 1.0
    retry_max: float = 3600.0
    max_age: float = 7 * 24 * 3600.0
    poll_interval: float = 1.0
    shutdown_grace: float = 3.0


@dataclass(frozen=True)
class IngressConfig:
    listen: ListenAddress = ListenAddress("0.0.0.0", 8080)
    max_body_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class AdminConfig:
    listen: ListenAddress = ListenAddress("127.0.0.1", 8081)


@dataclass(frozen=True)
class StoreConfig:
    path: Path = Path("/var/lib/relayd/relayd.db")


@dataclass(frozen=True)
class HubConfig:
    id: str = "home"
    secret_file: Path | None = Path("/etc/relayd/hub.secret")
    secret: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Endpoint:
    id: str
    destination_url: str


@dataclass(frozen=True)
class Config:
    relay: RelayConfig = RelayConfig()
    ingress: IngressConfig = IngressConfig()
    admin: AdminConfig = AdminConfig()
    store: StoreConfig = StoreConfig()
    hub: HubConfig = HubConfig()
    endpoints: tuple[Endpoint, ...] = ()

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        for ep in self.endpoints:
            if ep.id == endpoint_id:
                return ep
        return None


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None,
                load_secret: bool = True) -> Config:
    """Read ``path`` and return a validated `Config` (with the hub secret unless told not to)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(raw, base_dir=path.parent, environ=environ, load_secret=load_secret)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path = Path("."),
                 environ: Mapping[str, str] | None = None, load_secret: bool = True) -> Config:
    """Validate a parsed TOML document; relative paths are resolved against ``base_dir``."""
    environ = os.environ if environ is None else environ
    _reject_unknown("", raw, {"relay", "ingress", "admin", "store", "hub", "endpoints"})
    relay = _section(raw, "relay", RelayConfig, base_dir)
    if relay.stale_timeout <= relay.heartbeat_interval:
        raise ConfigError("relay.stale_timeout: must be greater than relay.heartbeat_interval")
    if relay.retry_max < relay.retry_initial:
        raise ConfigError("relay.retry_max: must be >= relay.retry_initial")
    hub = _section(raw, "hub", HubConfig, base_dir)
    if not hub.id:
        raise ConfigError("hub.id: must not be empty")
    if load_secret:
        hub = dataclasses.replace(hub, secret=_load_secret(hub.secret_file, environ))
    return Config(
        relay=relay,
        ingress=_section(raw, "ingress", IngressConfig, base_dir),
        admin=_section(raw, "admin", AdminConfig, base_dir),
        store=_section(raw, "store", StoreConfig, base_dir),
        hub=hub,
        endpoints=_endpoints(raw.get("endpoints", [])),
    )


def _reject_unknown(prefix: str, table: Mapping[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            name = f"{prefix}{key}"
            raise ConfigError(f"{name}: unknown key (known: {', '.join(sorted(known))})")


def _section(raw: Mapping[str, Any], name: str, cls: type[Any], base_dir: Path) -> Any:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "secret"}
    _reject_unknown(f"{name}.", table, set(fields))
    defaults = cls()
    values = {key: _convert(f"{name}.{key}", value, getattr(defaults, key), base_dir)
              for key, value in table.items()}
    return cls(**values)


def _convert(key: str, value: Any, default: Any, base_dir: Path) -> Any:
    """Convert a TOML value to the type of the field's default, or raise naming ``key``."""
    if isinstance(default, ListenAddress):
        return _listen_address(key, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{key}: must be a positive number of seconds, got {value!r}")
        return float(value)
    if isinstance(default, Path) or key == "hub.secret_file":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a path string")
        if not value:
            return None if key == "hub.secret_file" else _empty(key)
        return (base_dir / value) if not os.path.isabs(value) else Path(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string")
        return value
    raise ConfigError(f"{key}: unsupported value {value!r}")  # pragma: no cover


def _empty(key: str) -> Any:
    raise ConfigError(f"{key}: must not be empty")


def _listen_address(key: str, value: Any) -> ListenAddress:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a \"host:port\" string")
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{key}: must be \"host:port\" with a port 0-65535, got {value!r}")
    return ListenAddress(host, int(port_text))


def _endpoints(value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list):
        raise ConfigError("endpoints: must be an array of tables ([[endpoints]])")
    result: list[Endpoint] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        key = f"endpoints[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{key}: must be a table")
        _reject_unknown(f"{key}.", table, {"id", "destination_url"})
        ep_id = table.get("id")
        if not isinstance(ep_id, str) or not ENDPOINT_ID_RE.match(ep_id):
            raise ConfigError(f"{key}.id: must be 1-64 characters of A-Z a-z 0-9 _ . -, "
                              f"got {ep_id!r}")
        if ep_id in seen:
            raise ConfigError(f"{key}.id: duplicate endpoint id {ep_id!r}")
        seen.add(ep_id)
        url = table.get("destination_url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).netloc:
            raise ConfigError(f"{key}.destination_url: must be an http(s) URL, got {url!r}")
        result.append(Endpoint(ep_id, url))
    return tuple(result)


def _load_secret(secret_file: Path | None, environ: Mapping[str, str]) -> bytes:
    from_env = environ.get(SECRET_ENV, "").strip()
    if from_env:
        return from_env.encode()
    if secret_file is None:
        raise ConfigError(f"hub secret: {SECRET_ENV} is not set and hub.secret_file is empty")
    try:
        text = secret_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"hub.secret_file: {secret_file} does not exist "
                          f"(and {SECRET_ENV} is not set)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"hub.secret_file: cannot read {secret_file}: "
                          f"{type(exc).__name__}") from None
    if not text:
        raise ConfigError(f"hub.secret_file: {secret_file} is empty (and {SECRET_ENV} is not set)")
    return text.encode()
