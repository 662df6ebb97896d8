"""Load and validate relayd's TOML configuration.

Every section is a frozen dataclass. Unknown keys and bad values raise `ConfigError`
naming the key (``relay.stale_timeout: must be > 0``). Durations are seconds (floats
allowed). The hub secret never lives in the TOML: it is read from ``hub.secret_file`` or
the ``RELAYD_HUB_SECRET`` environment variable, and is kept out of ``repr``.
So are the endpoints' verification secrets (`Verification`: a file, or an environment
variable the config names).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from relayd.common.tomlconfig import (
    ConfigError,
    ListenAddress,
    build_section,
    read_secret,
    read_toml,
    reject_unknown,
)

__all__ = [
    "ADMIN_TOKEN_ENV",
    "VERIFY_SCHEMES",
    "AdminConfig",
    "Config",
    "ConfigError",
    "Endpoint",
    "HubConfig",
    "IngressConfig",
    "ListenAddress",
    "RelayConfig",
    "StoreConfig",
    "Verification",
    "is_loopback_host",
    "load_config",
    "parse_config",
    "read_admin_token",
]

SECRET_ENV = "RELAYD_HUB_SECRET"
ADMIN_TOKEN_ENV = "RELAYD_ADMIN_TOKEN"
# The characters a bearer token may hold in a header (RFC 6750's b64token), and a length
# that cannot be guessed over the network.
ADMIN_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,}$")
# Largest body relayd accepts: purerpc hubs receive messages of up to 32 MiB.
MAX_BODY_LIMIT = 16 * 1024 * 1024
ENDPOINT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# ``verify`` schemes (relayd.edge.verify) and the keys each one takes besides the secret.
VERIFY_SCHEMES: Mapping[str, frozenset[str]] = {
    "github": frozenset(),
    "stripe": frozenset({"tolerance"}),
    "standard-webhooks": frozenset({"tolerance"}),
    "slack": frozenset({"tolerance"}),
    "hmac-sha256": frozenset({"header", "prefix", "encoding"}),
    "token": frozenset({"header", "query"}),
}
SECRET_KEYS = frozenset({"secret_file", "secret_env"})
VERIFY_ENCODINGS = ("hex", "base64")
# An HTTP header name (RFC 9110 token) and an environment variable name.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Standard Webhooks serialises a symmetric secret as ``whsec_`` + base64.
STANDARD_WEBHOOKS_SECRET_PREFIX = "whsec_"
# The headers a trusted reverse proxy may name the sender in (ingress.proxy_header).
PROXY_HEADERS = ("x-forwarded-for", "forwarded")

T = TypeVar("T")


@dataclass(frozen=True)
class RelayConfig:
    grpc_listen: ListenAddress = ListenAddress("0.0.0.0", 50051)
    heartbeat_interval: float = 30.0
    stale_timeout: float = 60.0
    auth_window: float = 300.0
    connect_timeout: float = 10.0
    buffer_size: int = 1000
    pipeline_window: int = 256
    wake_on_ingest: bool = True
    retry_initial: float = 1.0
    retry_max: float = 3600.0
    max_age: float = 7 * 24 * 3600.0
    poll_interval: float = 1.0
    shutdown_grace: float = 3.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = 256
    max_connections_per_peer: int = 8
    max_failures_per_peer: int = 30  # per 10 s; then the peer is refused for the rest of it


@dataclass(frozen=True)
class IngressConfig:
    listen: ListenAddress = ListenAddress("0.0.0.0", 8080)
    max_body_bytes: int = 4 * 1024 * 1024
    read_timeout: float = 30.0  # the whole body must arrive within this (then 408)
    header_timeout: float = 5.0  # idle keep-alive, and headers not complete within this
    max_connections: int = 1024  # open at once; further ones wait in the listen backlog
    max_inflight_bytes: int = 64 * 1024 * 1024  # bodies being received or waiting for commit
    # Per sender (relayd.edge.ratelimit): requests per second, and how many may come at
    # once after a quiet spell. ``rate = 0`` turns the limit off.
    rate: float = 50.0
    burst: int = 100
    # Reverse proxies whose ``proxy_header`` names the sender (relayd.edge.client_addr):
    # CIDRs or addresses. Empty: the TCP peer is the sender, whatever the headers say.
    trusted_proxies: tuple[str, ...] = ()
    proxy_header: str = "x-forwarded-for"  # or "forwarded" (RFC 7239)
    # HTTPS (HTTP/1.1 and h2 by ALPN) when both are set; re-read on SIGHUP (relayd.edge.certs)
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class AdminConfig:
    listen: ListenAddress = ListenAddress("127.0.0.1", 8081)
    # A bearer token for every admin request (bar probes and the dashboard's page, see
    # relayd.edge.admin.security); required when ``listen`` is not a loopback address.
    token_file: Path | None = None
    token: bytes = field(default=b"", repr=False, metadata={"toml": False})
    # HTTPS when both are set, as for the ingress
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def loopback(self) -> bool:
        """Whether ``listen`` is reachable from this machine only (127.0.0.0/8, ::1)."""
        return is_loopback_host(self.listen.host)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP; any other name may resolve to a public address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_admin_token(token_file: Path | None, *, environ: Mapping[str, str],
                     file_key: str = "admin.token_file") -> bytes | None:
    """The admin token from ``environ[RELAYD_ADMIN_TOKEN]``, else ``token_file``, else None.

    The file is checked like the hub secret (`read_secret`: not readable by other users,
    not empty). A token that could not be sent in a header, or is short enough to guess,
    is a `ConfigError`; the message never includes the token.
    """
    if not environ.get(ADMIN_TOKEN_ENV, "").strip() and token_file is None:
        return None
    token = read_secret(token_file, file_key=file_key, env_name=ADMIN_TOKEN_ENV,
                        environ=environ)
    if not ADMIN_TOKEN_RE.match(token.decode()):
        where = ADMIN_TOKEN_ENV if environ.get(ADMIN_TOKEN_ENV, "").strip() else file_key
        raise ConfigError(f"{where}: the admin token must be at least 16 characters of "
                          "A-Z a-z 0-9 . _ ~ + / = - (create one with: openssl rand -hex 32)")
    return token


@dataclass(frozen=True)
class StoreConfig:
    path: Path = Path("/var/lib/relayd/relayd.db")
    busy_timeout: float = 5.0
    # How long a final webhook is kept after it became final (relayd.edge.retention);
    # 0 keeps it forever. ``keep_failed`` covers ``failed`` and ``dead_letter``.
    keep_delivered: float = 7 * 24 * 3600.0
    keep_failed: float = 30 * 24 * 3600.0
    # New webhooks are refused (503) while the database's file system has less free space
    # than this (0: no floor), or while its pages in use exceed ``max_bytes`` (None: no
    # cap); relayd.edge.capacity. The floor leaves room for acks and retries.
    min_free_bytes: int = 256 * 1024 * 1024
    max_bytes: int | None = None


# StoreConfig keys for which 0 means "forever" (every other duration must be > 0).
KEEP_FOREVER_KEYS = ("keep_delivered", "keep_failed")
# Keys for which 0 means "off" (the shared converter wants numbers > 0).
ZERO_OFF_KEYS = {"ingress": ("rate",), "store": ("min_free_bytes",)}


@dataclass(frozen=True)
class HubConfig:
    id: str = "home"
    secret_file: Path | None = Path("/etc/relayd/hub.secret")
    secret: bytes = field(default=b"", repr=False, metadata={"toml": False})


@dataclass(frozen=True)
class Verification:
    """``[[endpoints]] verify``: how a webhook's sender is checked before it is stored.

    ``keys`` holds one key per configured secret (several: rotation, any one is accepted),
    as the scheme uses it: a standard-webhooks ``whsec_`` secret base64-decoded, any other
    the secret's bytes. It is empty when the config was loaded without secrets.
    """

    scheme: str = field(default="", metadata={"toml": False})
    secret_file: Path | None = None  # one secret per line
    secret_env: str = ""  # the name of an environment variable holding them
    tolerance: float = 300.0  # accepted age of a signed timestamp, either way
    header: str = ""  # hmac-sha256, token: the header carrying the signature or token
    prefix: str = ""  # hmac-sha256: text before the encoded signature (e.g. "sha256=")
    encoding: str = "hex"  # hmac-sha256: "hex" or "base64"
    query: str = ""  # token: the query parameter carrying it (instead of a header)
    keys: tuple[bytes, ...] = field(default=(), repr=False, metadata={"toml": False})


@dataclass(frozen=True)
class Endpoint:
    id: str
    destination_url: str
    verify: Verification | None = None  # None: anyone who knows the URL may send
    # Pending webhooks (stored, not yet final) above which new ones get 503 (capacity.py)
    max_pending: int = 100_000


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
    """Read ``path`` and return a validated `Config`.

    The hub secret and the admin token are read too, unless ``load_secret`` is false.
    """
    path = Path(path)
    raw = read_toml(path)
    return parse_config(raw, base_dir=path.parent, environ=environ, load_secret=load_secret)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path = Path("."),
                 environ: Mapping[str, str] | None = None, load_secret: bool = True) -> Config:
    """Validate a parsed TOML document; relative paths are resolved against ``base_dir``."""
    environ = os.environ if environ is None else environ
    reject_unknown("", raw, {"relay", "ingress", "admin", "store", "hub", "endpoints"})
    relay = build_section(raw, "relay", RelayConfig, base_dir)
    if relay.stale_timeout < 2 * relay.heartbeat_interval:
        # With both sides set alike, one late or lost heartbeat must not drop a healthy link.
        raise ConfigError("relay.stale_timeout: must be at least 2 x relay.heartbeat_interval "
                          f"({relay.stale_timeout:g} < 2 x {relay.heartbeat_interval:g})")
    if (relay.tls_cert is None) != (relay.tls_key is None):
        raise ConfigError("relay.tls_cert: tls_cert and tls_key must be set together")
    if relay.retry_max < relay.retry_initial:
        raise ConfigError("relay.retry_max: must be >= relay.retry_initial")
    ingress = _ingress(raw, base_dir)
    if ingress.max_body_bytes > MAX_BODY_LIMIT:
        raise ConfigError(f"ingress.max_body_bytes: at most {MAX_BODY_LIMIT} (a webhook travels "
                          "to the hub as one gRPC message)")
    if ingress.max_inflight_bytes < ingress.max_body_bytes:
        raise ConfigError("ingress.max_inflight_bytes: must be >= ingress.max_body_bytes "
                          "(else a body of the largest allowed size could never be taken)")
    hub = build_section(raw, "hub", HubConfig, base_dir)
    if not hub.id:
        raise ConfigError("hub.id: must not be empty")
    if load_secret:
        secret = read_secret(hub.secret_file, file_key="hub.secret_file", env_name=SECRET_ENV,
                             environ=environ)
        hub = dataclasses.replace(hub, secret=secret)
    return Config(
        relay=relay,
        ingress=ingress,
        admin=_admin(raw, base_dir, environ, load_secret),
        store=_store(raw, base_dir),
        hub=hub,
        endpoints=_endpoints(raw.get("endpoints", []), base_dir, environ, load_secret),
    )


def _admin(raw: Mapping[str, Any], base_dir: Path, environ: Mapping[str, str],
           load_secret: bool) -> AdminConfig:
    admin = build_section(raw, "admin", AdminConfig, base_dir)
    _tls_pair("admin", admin.tls_cert, admin.tls_key)
    has_token = admin.token_file is not None or bool(environ.get(ADMIN_TOKEN_ENV, "").strip())
    if not admin.loopback and not has_token:
        # retry and replay must not be open to whoever can reach the port
        raise ConfigError(
            f"admin.token_file: admin.listen {admin.listen} is not a loopback address, so the "
            "admin API needs a token: set admin.token_file to a file only relayd can read, "
            f"holding e.g. the output of `openssl rand -hex 32` (or set {ADMIN_TOKEN_ENV})")
    if not load_secret:
        return admin
    token = read_admin_token(admin.token_file, environ=environ)
    return admin if token is None else dataclasses.replace(admin, token=token)


def _store(raw: Mapping[str, Any], base_dir: Path) -> StoreConfig:
    table = raw.get("store", {})
    if not isinstance(table, dict):
        raise ConfigError("store: must be a table")
    # The shared converter wants every duration > 0; 0 (not false) is "keep forever" here.
    forever = set()
    for key in KEEP_FOREVER_KEYS:
        value = table.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            if value < 0:
                raise ConfigError(f"store.{key}: must be a number of seconds >= 0 "
                                  f"(0: keep forever), got {value!r}")
            forever.add(key)
    rest = {key: value for key, value in table.items() if key not in forever}
    store = _build_zero_off({"store": rest}, "store", StoreConfig, base_dir)
    zeros: dict[str, Any] = dict.fromkeys(forever, 0.0)
    return dataclasses.replace(store, **zeros)


def _ingress(raw: Mapping[str, Any], base_dir: Path) -> IngressConfig:
    ingress = _build_zero_off(raw, "ingress", IngressConfig, base_dir)
    for cidr in ingress.trusted_proxies:
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ConfigError(f"ingress.trusted_proxies: {cidr!r} is not an address or a "
                              f"network (CIDR): {exc}") from None
    _tls_pair("ingress", ingress.tls_cert, ingress.tls_key)
    if ingress.proxy_header not in PROXY_HEADERS:
        raise ConfigError(f"ingress.proxy_header: must be one of {', '.join(PROXY_HEADERS)}, "
                          f"got {ingress.proxy_header!r}")
    return ingress


def _tls_pair(section: str, cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise ConfigError(f"{section}.{missing}: tls_cert and tls_key must be set together")


def _build_zero_off(raw: Mapping[str, Any], name: str, cls: type[T], base_dir: Path) -> T:
    """`build_section`, where the keys of `ZERO_OFF_KEYS` may also be 0 ("off")."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table")
    given: dict[str, Any] = {}
    for key in ZERO_OFF_KEYS[name]:
        if key not in table:
            continue
        value = table[key]
        is_float = isinstance(getattr(cls, key), float)  # the default's type is the key's
        number = int | float if is_float else int
        if isinstance(value, bool) or not isinstance(value, number) or value < 0:
            what = "a number" if is_float else "an integer"
            raise ConfigError(f"{name}.{key}: must be {what} >= 0 (0: off), got {value!r}")
        given[key] = float(value) if is_float else value
    rest = {key: value for key, value in table.items() if key not in given}
    section: Any = build_section({name: rest}, name, cls, base_dir)
    return dataclasses.replace(section, **given)  # type: ignore[no-any-return]


def _endpoints(value: Any, base_dir: Path, environ: Mapping[str, str],
               load_secret: bool) -> tuple[Endpoint, ...]:
    if not isinstance(value, list):
        raise ConfigError("endpoints: must be an array of tables ([[endpoints]])")
    verify_keys = {"verify"} | SECRET_KEYS | set().union(*VERIFY_SCHEMES.values())
    result: list[Endpoint] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        key = f"endpoints[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{key}: must be a table")
        reject_unknown(f"{key}.", table, {"id", "destination_url", "max_pending"} | verify_keys)
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
        max_pending = table.get("max_pending", Endpoint.max_pending)
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"{key}.max_pending: must be a positive integer, "
                              f"got {max_pending!r}")
        verify_table = {k: v for k, v in table.items() if k in verify_keys}
        verification = (_verification(key, verify_table, base_dir, environ, load_secret)
                        if verify_table else None)
        result.append(Endpoint(ep_id, url, verification, max_pending))
    return tuple(result)


def _verification(key: str, table: dict[str, Any], base_dir: Path,
                  environ: Mapping[str, str], load_secret: bool) -> Verification:
    """``endpoints[i].verify`` and the keys that go with it; every error names its key."""
    scheme = table.pop("verify", None)
    if scheme is None:
        raise ConfigError(f"{key}.{next(iter(table))}: only used with verify = \"<scheme>\" "
                          f"(schemes: {', '.join(sorted(VERIFY_SCHEMES))})")
    if not isinstance(scheme, str) or scheme not in VERIFY_SCHEMES:
        raise ConfigError(f"{key}.verify: unknown scheme {scheme!r} "
                          f"(known: {', '.join(sorted(VERIFY_SCHEMES))})")
    takes = VERIFY_SCHEMES[scheme] | SECRET_KEYS
    for name in table:
        if name not in takes:
            raise ConfigError(f"{key}.{name}: not used by verify = {scheme!r} "
                              f"(it takes: {', '.join(sorted(takes))})")
    spec = dataclasses.replace(build_section({key: table}, key, Verification, base_dir),
                               scheme=scheme)
    if (spec.secret_file is None) == (not spec.secret_env):
        where = "secret_env" if spec.secret_file is not None else "secret_file"
        raise ConfigError(f"{key}.{where}: verify = {scheme!r} needs one secret source: "
                          "secret_file or secret_env (not both)")
    if spec.secret_env and not ENV_NAME_RE.match(spec.secret_env):
        raise ConfigError(f"{key}.secret_env: must name an environment variable, "
                          f"got {spec.secret_env!r}")
    for name in ("header", "query"):
        if name in table and not getattr(spec, name):
            raise ConfigError(f"{key}.{name}: must not be empty")
    if spec.header and not HEADER_NAME_RE.match(spec.header):
        raise ConfigError(f"{key}.header: not an HTTP header name: {spec.header!r}")
    if scheme == "hmac-sha256" and not spec.header:
        raise ConfigError(f"{key}.header: verify = 'hmac-sha256' needs the header that "
                          "carries the signature")
    if scheme == "token" and (not spec.header) == (not spec.query):
        raise ConfigError(f"{key}.header: verify = 'token' needs where the token is: "
                          "header or query (not both)")
    if spec.encoding not in VERIFY_ENCODINGS:
        raise ConfigError(f"{key}.encoding: must be one of {', '.join(VERIFY_ENCODINGS)}, "
                          f"got {spec.encoding!r}")
    # ASGI hands header names lowercased
    spec = dataclasses.replace(spec, header=spec.header.lower())
    if not load_secret:
        return spec
    return dataclasses.replace(spec, keys=_verify_keys(key, spec, environ))


def _verify_keys(key: str, spec: Verification, environ: Mapping[str, str]
                 ) -> tuple[bytes, ...]:
    """The keys of ``spec``'s secrets: one secret per line of the file or the variable."""
    if spec.secret_file is not None:
        where = f"{key}.secret_file"
        text = read_secret(spec.secret_file, file_key=where, env_name=None,
                           environ=environ).decode()
    else:
        where = f"{key}.secret_env"
        text = environ.get(spec.secret_env, "").strip()
        if not text:
            raise ConfigError(f"{where}: the environment variable {spec.secret_env} is not "
                              "set or empty")
    secrets = [line.strip() for line in text.splitlines() if line.strip()]
    if spec.scheme != "standard-webhooks":
        return tuple(secret.encode() for secret in secrets)
    keys = []
    for number, secret in enumerate(secrets, 1):
        encoded = secret.removeprefix(STANDARD_WEBHOOKS_SECRET_PREFIX)
        try:
            # the reference libraries accept unpadded base64 too
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            decoded = b""
        if not decoded:  # never the secret in the message: only which one
            raise ConfigError(f"{where}: secret {number} of {len(secrets)} is not a "
                              f"standard-webhooks secret ({STANDARD_WEBHOOKS_SECRET_PREFIX} "
                              "followed by base64)")
        keys.append(decoded)
    return tuple(keys)
