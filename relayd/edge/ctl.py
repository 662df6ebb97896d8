"""``relayctl``: ask a running relayd what it is doing; list, show, retry and replay webhooks.

Commands: ``status``, ``list``, ``show ID``, ``retry ID... | --endpoint E``, ``replay ID...``;
each prints for a person, or the admin API's JSON with ``--json`` (`ctl_text` does the
person's version). Finds the daemon through ``--admin URL`` (default
``http://127.0.0.1:8081``) or through ``--config PATH`` (the daemon's own config; its
``[admin] listen``). Sends the admin token, if any, from ``--token-file PATH``, else
``RELAYD_ADMIN_TOKEN``, else the config's ``[admin] token_file``.

Exit codes (`EXIT_*`): 0 done; 1 relayd unreachable or it answered an error; 2 bad usage
(with no arguments at all it prints its help); 3 no such webhook or endpoint; 4 conflict
(a retry of a delivered webhook or of one in flight). With several ids, each is tried and
the code is the first failure's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from relayd.edge import ctl_text
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
# An endpoint retry of many thousands takes a while (it answers when all are pending).
TIMEOUT_SECONDS = 60.0

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 0, 1, 2, 3, 4
# What an admin API answer means for the exit code.
EXIT_FOR_STATUS = {400: EXIT_USAGE, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}
# Mirrors of the admin API's values (relayd.edge.admin.api), so a typo is a usage error
# before anything is asked.
STATUSES = ("pending", "delivered", "failed", "dead_letter")
RETRYABLE = ("pending", "failed", "dead_letter")
LIST_LIMIT = 50
MAX_LIST_LIMIT = 500


class CtlError(Exception):
    """Why relayctl stops, and its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Admin:
    """The admin API of one relayd, over HTTP."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The JSON answer; raises `CtlError` for an error answer or no answer."""
        try:
            response = httpx.request(method, f"{self.base}{path}", headers=self.headers,
                                     json=body, timeout=TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            raise CtlError(f"relayd is not reachable at {self.base} "
                           f"({type(exc).__name__}: {exc})", EXIT_ERROR) from None
        try:
            doc = response.json()
        except json.JSONDecodeError:
            doc = None
        if response.status_code == 401:
            raise CtlError(f"relayd at {self.base} answered 401\nrelayctl: the admin "
                           "listener wants a token: --token-file PATH, RELAYD_ADMIN_TOKEN, or "
                           "--config with [admin] token_file", EXIT_ERROR)
        if response.is_error or not isinstance(doc, dict):
            message = doc.get("error") if isinstance(doc, dict) else None
            raise CtlError(message or f"relayd at {self.base} answered {response.status_code}",
                           EXIT_FOR_STATUS.get(response.status_code, EXIT_ERROR))
        answer: dict[str, Any] = doc
        return answer


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




def _status(admin: Admin, args: argparse.Namespace) -> int:
    doc = admin.call("GET", "/api/status")
    print(_json(doc) if args.json else ctl_text.status_text(doc, time.time()))
    return EXIT_OK


def _list(admin: Admin, args: argparse.Namespace) -> int:
    query = {name: value for name, value in (("status", args.status),
                                             ("endpoint", args.endpoint),
                                             ("limit", args.limit), ("before", args.before))
             if value is not None}
    doc = admin.call("GET", f"/api/webhooks?{urlencode(query)}")
    print(_json(doc) if args.json else ctl_text.list_text(doc, time.time()))
    if doc["next"] is not None and not args.json:
        print(f"(more: add --before {doc['next']})", file=sys.stderr)
    return EXIT_OK


def _show(admin: Admin, args: argparse.Namespace) -> int:
    doc = admin.call("GET", f"/api/webhooks/{quote(args.id, safe='')}")
    print(_json(doc) if args.json else ctl_text.show_text(doc, time.time(), body=args.body))
    return EXIT_OK


def _retry(admin: Admin, args: argparse.Namespace) -> int:
    if args.endpoint is not None:
        if args.ids:
            raise CtlError("retry: give webhook ids or --endpoint, not both", EXIT_USAGE)
        body = None if args.status is None else {"status": args.status}
        doc = admin.call("POST", f"/api/endpoints/{quote(args.endpoint, safe='')}/retry", body)
        print(_json(doc) if args.json else ctl_text.endpoint_retry_text(doc))
        return EXIT_OK
    if args.status is not None:
        raise CtlError("retry: --status goes with --endpoint", EXIT_USAGE)
    if not args.ids:
        raise CtlError("retry: give webhook ids, or --endpoint E", EXIT_USAGE)
    return _each(admin, args, "retry", ctl_text.retry_text)


def _replay(admin: Admin, args: argparse.Namespace) -> int:
    return _each(admin, args, "replay", ctl_text.replay_text)


def _each(admin: Admin, args: argparse.Namespace, action: str,
          text: Callable[[dict[str, Any]], str]) -> int:
    """POST ``action`` for each id; an id that fails does not stop the others."""
    code, answers = EXIT_OK, []
    for webhook_id in args.ids:
        try:
            doc = admin.call("POST", f"/api/webhooks/{quote(webhook_id, safe='')}/{action}")
        except CtlError as exc:
            if exc.code == EXIT_ERROR:
                raise  # relayd is gone: the next ones would fail alike
            code = code or exc.code
            answers.append({"id": webhook_id, "error": str(exc)})
            if not args.json:
                print(f"relayctl: {exc}", file=sys.stderr)
            continue
        answers.append(doc)
        if not args.json:
            print(text(doc))
    if args.json:
        print(_json(answers))
    return code


def _json(doc: object) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


EPILOG = f"""\
commands:
  status  what relayd is doing: the hub connection, the queue, each endpoint
  list    webhooks, newest first (--status, --endpoint, --limit, --before)
  show    one webhook: request, attempts, last error, headers (--body: its body)
  retry   send webhooks again as themselves, in their place in the endpoint's order
          (relayctl retry ID... | relayctl retry --endpoint E [--status S ...])
  replay  send copies of webhooks as new ones, at the end of the queue

environment:
  {ADMIN_TOKEN_ENV}  the admin token, when --token-file is not given

exit codes:
  0  done
  1  relayd is unreachable or answered an error
  2  bad usage (no command, for instance: this help is printed)
  3  no such webhook or endpoint
  4  conflict: a retry of a delivered webhook (replay it) or of one in flight
"""


def _connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config, --admin, --token-file, --json: before the command or after it.

    After it (on the command's parser) they default to nothing at all, so that they do
    not overwrite what was given before the command.
    """
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--config", metavar="PATH", default=default(None),
                        help="the daemon's relayd.toml, to find its admin.listen address "
                             "(default: not used; --admin or its default instead)")
    parser.add_argument("--admin", metavar="URL", default=default(None),
                        help=f"admin base URL (default: {DEFAULT_ADMIN}, relayd's default "
                             "admin.listen)")
    parser.add_argument("--token-file", metavar="PATH", default=default(None),
                        help=f"file holding the admin token (default: {ADMIN_TOKEN_ENV}, "
                             "else [admin] token_file of --config)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the admin API's JSON (default: text for a person)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relayctl", description="relayctl: ask a running relayd (through its admin "
        "listener)\nwhat it is doing; list, show, retry and replay its webhooks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_options(parser, top=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('relayd')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command",
                                     help="status, list, show, retry, replay")

    def command(name: str, run: Callable[[Admin, argparse.Namespace], int], text: str
                ) -> argparse.ArgumentParser:
        # (no help=: the epilog lists the commands, once)
        sub = commands.add_parser(name, description=text)
        _connection_options(sub, top=False)
        sub.set_defaults(run=run)
        return sub

    command("status", _status, "what relayd is doing: the hub, the queue, each endpoint")
    listing = command("list", _list, "webhooks, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only these (default: all)")
    listing.add_argument("--endpoint", metavar="E", help="only this endpoint's (default: all)")
    listing.add_argument("--limit", type=_bounded(1, MAX_LIST_LIMIT), metavar="N",
                         help=f"at most N (default: {LIST_LIMIT}, at most {MAX_LIST_LIMIT})")
    listing.add_argument("--before", type=_bounded(1, None), metavar="SEQ",
                         help="the page after the one that said '--before SEQ' "
                              "(default: the newest)")
    show = command("show", _show, "one webhook in full")
    show.add_argument("id", help="the webhook id (as list shows it)")
    show.add_argument("--body", action="store_true",
                      help="print its body too (default: not; base64 when not UTF-8)")
    retry = command("retry", _retry, "send webhooks again as themselves, in their place")
    retry.add_argument("ids", nargs="*", metavar="ID", help="webhook ids")
    retry.add_argument("--endpoint", metavar="E",
                       help="every failed and dead-lettered webhook of E instead "
                            "(default: the ids given)")
    retry.add_argument("--status", choices=RETRYABLE, action="append",
                       help="with --endpoint, only these; repeat for more (default: failed "
                            "and dead_letter; pending: those waiting out a backoff)")
    replay = command("replay", _replay, "send copies of webhooks as new ones, at the end")
    replay.add_argument("ids", nargs="+", metavar="ID", help="webhook ids")
    return parser


def _bounded(low: int, high: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(text)
        return value

    parse.__name__ = "number"  # argparse's "invalid number value: ..."
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):
        # a bare ``relayctl``: show what it can do rather than argparse's one-line error
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        base = _admin_url(args)
        headers = _auth_headers(args)
    except ConfigError as exc:
        print(f"relayctl: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(Admin(base, headers), args)
    except CtlError as exc:
        print(f"relayctl: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # the reader left (``relayctl list | head``): no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
