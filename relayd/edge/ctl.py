"""``relayctl status``: show what relayd is doing, for a person (or ``--json``).

Finds the daemon through ``--admin URL`` (default ``http://127.0.0.1:8081``) or through
``--config PATH`` (the daemon's own config; its ``[admin] listen``). Sends the admin token,
if any, from ``--token-file PATH``, else ``RELAYD_ADMIN_TOKEN``, else the config's
``[admin] token_file``. Exits 0 when the daemon answered, 1 when it is unreachable or
answered an error, 2 for bad usage (with no arguments at all it prints its help, and
exits 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from relayd.edge.config import (
    ADMIN_TOKEN_ENV,
    AdminConfig,
    ConfigError,
    load_config,
    read_admin_token,
)

__all__ = ["main"]

# relayd's default admin.listen
DEFAULT_ADMIN = f"http://{AdminConfig().listen}"
TIMEOUT_SECONDS = 5.0


def _admin_url(args: argparse.Namespace) -> str:
    if args.admin:
        admin: str = args.admin
        return admin.rstrip("/")
    if args.config:
        listen = load_config(args.config, load_secret=False).admin.listen
        if listen.port == 0:
            raise ConfigError(f"admin.listen in {args.config} has port 0 (picked at start-up, "
                              "see relayd's 'relayd ready' log line): use --admin URL")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{listen.port}"
    return DEFAULT_ADMIN


def _auth_headers(args: argparse.Namespace) -> dict[str, str]:
    """``Authorization: Bearer`` with the admin token, if one is given anywhere."""
    if args.token_file:
        # the explicit option wins over the environment: read the file alone
        token = read_admin_token(Path(args.token_file), environ={}, file_key="--token-file")
    else:
        token_file = load_config(args.config, load_secret=False).admin.token_file \
            if args.config else None
        token = read_admin_token(token_file, environ=os.environ)
    return {} if token is None else {"Authorization": f"Bearer {token.decode()}"}


def _human(doc: dict[str, Any]) -> str:
    queue = doc["queue"]
    lines = []
    if doc["connected"]:
        lines.append(f"hub:         connected ({doc['hub_id']} from {doc['peer']})")
        lines.append(f"since:       {doc['connected_since']}")
        lines.append(f"last seen:   {doc['last_seen_at']}")
    else:
        lines.append("hub:         disconnected")
    age = queue["oldest_pending_age_seconds"]
    lines.append(f"pending:     {queue['pending']}"
                 + (f" (oldest {age:.0f}s)" if age is not None else ""))
    lines.append(f"in flight:   {queue['in_flight']}")
    lines.append(f"delivered:   {queue['delivered']}")
    lines.append(f"failed:      {queue['failed']}")
    lines.append(f"dead letter: {queue['dead_letter']}")
    return "\n".join(lines)


EPILOG = f"""\
commands:
  status  what relayd is doing: the hub connection and the webhook queue

environment:
  {ADMIN_TOKEN_ENV}  the admin token, when --token-file is not given

exit codes:
  0  relayd answered
  1  relayd is unreachable or answered an error
  2  bad usage (no command, for instance: this help is printed)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relayctl", description="relayctl: ask a running relayd (through its admin "
        "listener)\nwhat it is doing.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["status"], help="what to do: status")
    parser.add_argument("--config", metavar="PATH",
                        help="the daemon's relayd.toml, to find its admin.listen address "
                             "(default: not used; --admin or its default instead)")
    parser.add_argument("--admin", metavar="URL",
                        help=f"admin base URL (default: {DEFAULT_ADMIN}, relayd's default "
                             "admin.listen)")
    parser.add_argument("--json", action="store_true",
                        help="print the raw status JSON (default: a summary for a person)")
    parser.add_argument("--token-file", metavar="PATH",
                        help=f"file holding the admin token (default: {ADMIN_TOKEN_ENV}, "
                             "else [admin] token_file of --config)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('relayd')}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):
        # a bare ``relayctl``: show what it can do rather than argparse's one-line error
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        base = _admin_url(args)
        headers = _auth_headers(args)
    except ConfigError as exc:
        print(f"relayctl: configuration error: {exc}", file=sys.stderr)
        return 2
    url = f"{base}/api/status"
    try:
        response = httpx.get(url, headers=headers, timeout=TIMEOUT_SECONDS)
        response.raise_for_status()
        doc = response.json()
    except httpx.HTTPStatusError as exc:
        print(f"relayctl: relayd at {base} answered {exc.response.status_code}", file=sys.stderr)
        if exc.response.status_code == 401:
            print("relayctl: the admin listener wants a token: --token-file PATH, "
                  "RELAYD_ADMIN_TOKEN, or --config with [admin] token_file", file=sys.stderr)
        return 1
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        print(f"relayctl: relayd is not reachable at {base} ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else _human(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
