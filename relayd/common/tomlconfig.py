"""Typed TOML sections: the shared machinery behind relayd's and relay-hub's configs.

A section is a frozen dataclass whose defaults are the defaults and whose annotations
say how a TOML value is checked and converted. Errors are `ConfigError`s that name the
key (``relay.stale_timeout: must be a positive number of seconds, got -1``).
Fields with ``metadata={"toml": False}`` (e.g. a secret) cannot be set from the file.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "ListenAddress",
    "build_section",
    "read_secret",
    "read_toml",
    "reject_unknown",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the reason."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, key: str, value: Any) -> ListenAddress:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a \"host:port\" string")
        host, sep, port_text = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            raise ConfigError(f"{key}: must be \"host:port\" with a port 0-65535, got {value!r}")
        return cls(host, int(port_text))


def read_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; a missing, unreadable or invalid file is a `ConfigError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def reject_unknown(prefix: str, table: Mapping[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def build_section(raw: Mapping[str, Any], name: str, cls: type[T], base_dir: Path) -> T:
    """Build dataclass ``cls`` from the TOML table ``raw[name]`` (missing: all defaults)."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table")
    hints = typing.get_type_hints(cls)
    settable = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.metadata.get("toml", True)}
    reject_unknown(f"{name}.", table, settable)
    values = {key: _convert(f"{name}.{key}", value, hints[key], base_dir)
              for key, value in table.items()}
    return cls(**values)


def _convert(key: str, value: Any, kind: Any, base_dir: Path) -> Any:
    """Check ``value`` against the annotation ``kind`` and convert it, or raise naming ``key``."""
    optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
    if optional:
        kind = next(a for a in kind.__args__ if a is not type(None))
    if kind is ListenAddress:
        return ListenAddress.parse(key, value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{key}: must be a positive number of seconds, got {value!r}")
        return float(value)
    if kind is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a path string")
        if not value:
            if optional:
                return None
            raise ConfigError(f"{key}: must not be empty")
        return Path(value) if os.path.isabs(value) else base_dir / value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string")
        return value
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{key}: must be an array of non-empty strings")
        return tuple(value)
    raise ConfigError(f"{key}: unsupported setting type {kind!r}")  # pragma: no cover


def read_secret(secret_file: Path | None, *, file_key: str, env_name: str | None,
                environ: Mapping[str, str]) -> bytes:
    """The secret from ``environ[env_name]`` if set, else the stripped content of the file.

    A missing or empty secret, or a file other users may read, is a `ConfigError` naming
    where it looked (the file as an absolute path, whatever the working directory); it never
    includes the secret itself. ``env_name`` None: the file only, no variable overrides it.
    """
    from_env = environ.get(env_name, "").strip() if env_name is not None else ""
    if from_env:
        return from_env.encode()
    unset = f" (and {env_name} is not set)" if env_name is not None else ""
    if secret_file is None:
        but = f", and {env_name} is not set" if env_name is not None else ""
        raise ConfigError(f"{file_key}: empty{but}: no secret")
    secret_file = Path(os.path.abspath(secret_file))
    try:
        mode = secret_file.stat().st_mode
        if mode & 0o007:
            raise ConfigError(
                f"{file_key}: {secret_file} is accessible to other users (mode "
                f"{stat.S_IMODE(mode):04o}); restrict it, e.g. chmod 600 (or 640 with a "
                "group the daemon runs in)")
        text = secret_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{file_key}: {secret_file} does not exist{unset}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file_key}: cannot read {secret_file}: "
                          f"{type(exc).__name__}") from None
    if not text:
        raise ConfigError(f"{file_key}: {secret_file} is empty{unset}")
    return text.encode()
