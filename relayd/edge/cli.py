"""``relayd --config PATH``: run the edge daemon until SIGTERM/SIGINT; SIGHUP reloads the
config's endpoints and secrets and the HTTPS certificates (`Relayd.reload`).

``relayd --config PATH --check`` validates the config, opens the store (creating or
migrating it), binds nothing, prints a summary (never the secret) and exits.

Exit codes: 0 after a graceful stop (or a good check), 2 for a configuration error (the
message names the key; with ``--check`` also a store that cannot be opened, naming
``store.path``), 1 when the daemon could not start or run (e.g. a listen address in use,
named by its key; an unusable store). A second SIGTERM/SIGINT during the graceful stop
ends it at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from pathlib import Path

import trio

from relayd.common.cli import daemon_parser
from relayd.common.logs import setup_logging
from relayd.common.runner import describe, leaves, run_until_signalled
from relayd.edge.config import ADMIN_TOKEN_ENV, SECRET_ENV, Config, ConfigError, load_config
from relayd.edge.daemon import Relayd
from relayd.edge.listen_error import ListenError
from relayd.edge.store import STATUSES, Store, retry_policy

__all__ = ["main"]

log = logging.getLogger("relayd")

EPILOG = f"""\
environment:
  {SECRET_ENV}   the hub secret; when set it overrides hub.secret_file
  {ADMIN_TOKEN_ENV}  the admin token; when set it overrides admin.token_file

exit codes:
  0  stopped gracefully (--check: the config and the store are usable)
  1  could not start or run (e.g. a listen address already in use)
  2  configuration error, the message names the key (--check: also an unusable store)

Every config key and its default: conf/relayd.toml in the source, or the README.
"""


def _parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "relayd", description="relayd: the webhook relay's public edge. It accepts webhooks "
        "over HTTP,\nstores them durably and streams them to relay-hub over gRPC.",
        epilog=EPILOG, config_file="relayd.toml",
        check_help="validate the config, open (create or migrate) the store, print a summary "
                   "and exit; binds no port (default: run the daemon)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"relayd: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return _check(config, Path(args.config))
    daemon = Relayd(config, config_path=Path(args.config))
    code = 0
    try:
        trio.run(run_until_signalled, daemon.run, daemon.request_shutdown, daemon.reload)
    except* ListenError as group:
        for listen_error in leaves(group):
            log.error("relayd could not run: %s", listen_error)
        code = 1
    except* (OSError, sqlite3.Error) as group:
        for error in leaves(group):
            # the store is opened first: if it is not open, opening it failed
            text = _store_problem(config, error) if daemon.store is None else describe(error)
            log.error("relayd could not run: %s", text)
        code = 1
    return code


def _check(config: Config, config_path: Path) -> int:
    """``--check``: print the summary and return 0, or the store's problem and return 2."""
    try:
        store_summary = trio.run(_open_store, config)
    except* (OSError, sqlite3.Error) as group:
        print(f"relayd: {_store_problem(config, leaves(group)[0])}", file=sys.stderr)
        store_summary = None
    if store_summary is None:
        return 2
    print(_summary(config, config_path, store_summary))
    return 0


async def _open_store(config: Config) -> str:
    """Open (create or migrate) the store, as the daemon would; a line about its content."""
    async with Store.open(config.store.path, retry_policy(config.relay),
                          busy_timeout=config.store.busy_timeout) as store:
        counts = await store.counts()
        orphans = await store.pending_outside([ep.id for ep in config.endpoints])
    text = ", ".join(f"{status.replace('_', ' ')} {counts[status]}" for status in STATUSES)
    if orphans:
        text += "; pending for endpoints no longer configured: " + ", ".join(
            f"{endpoint_id} {count}" for endpoint_id, count in sorted(orphans.items()))
    return text


def _summary(config: Config, config_path: Path, store_summary: str) -> str:
    relay = config.relay
    secret_from = (SECRET_ENV if os.environ.get(SECRET_ENV, "").strip()
                   else os.path.abspath(str(config.hub.secret_file)))
    tls = f"TLS {os.path.abspath(relay.tls_cert)}" if relay.tls_cert is not None else "no TLS"
    admin = config.admin
    token = ("no token" if not admin.token else f"token from {ADMIN_TOKEN_ENV}"
             if os.environ.get(ADMIN_TOKEN_ENV, "").strip()
             else f"token from {os.path.abspath(str(admin.token_file))}")
    lines = [
        f"relayd: {os.path.abspath(config_path)} is valid (listen addresses not tried)",
        f"  hub:        id {config.hub.id!r}, secret from {secret_from}",
        f"  hub stream: {relay.grpc_listen} (relay.grpc_listen, {tls})",
        f"  webhooks:   {config.ingress.listen} (ingress.listen): POST /h/<endpoint id>",
        f"  status:     {admin.listen} (admin.listen, {token})",
        f"  store:      {os.path.abspath(config.store.path)} (opened: {store_summary})",
    ]
    if config.endpoints:
        lines.append("  endpoints:")
        lines += [f"    {ep.id} -> {ep.destination_url} ("
                  + (f"verified: {ep.verify.scheme}" if ep.verify else "senders not verified")
                  + ")" for ep in config.endpoints]
    else:
        lines.append("  endpoints:  none; warning: every webhook will be answered 404")
    return "\n".join(lines)


def _store_problem(config: Config, exc: BaseException) -> str:
    """What is wrong with ``store.path``, for a person: ``store.path: ...``."""
    path = Path(os.path.abspath(config.store.path))
    if path.is_dir():
        return (f"store.path: {path} is a folder; it must be the database file, "
                f"e.g. {path / 'relayd.db'}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"store.path: {path}: {blocking} is a file, not a folder"
    return f"store.path: cannot open the database {path}: {describe(exc)}"


if __name__ == "__main__":
    sys.exit(main())
