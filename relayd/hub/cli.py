"""``relay-hub --config PATH``: run the home hub until SIGTERM/SIGINT.

``relay-hub --config PATH --check`` validates the config, connects and authenticates once,
prints the result and exits (0: accepted, 1: not). Note that a successful check briefly
replaces a running hub's connection (the edge keeps one hub); that hub reconnects by itself.

Exit codes: 0 after a graceful stop, 2 for a configuration error naming the key.
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from relayd.common import systemd
from relayd.common.cli import daemon_parser
from relayd.common.logs import setup_logging
from relayd.common.runner import describe, leaves, run_until_signalled
from relayd.hub.config import SECRET_ENV, ConfigError, HubConfig, load_hub_config
from relayd.hub.daemon import CONNECTION_ERRORS, Rejected, RelayHub, authenticate
from relayd.hub.probe import HANDSHAKE_ERRORS, NOT_RELAYD, not_relayd
from relayd.transport.client import open_relay_stream

__all__ = ["main"]

log = logging.getLogger("relay-hub")


async def check(config: HubConfig) -> tuple[bool, str]:
    """Connect and authenticate once; return (accepted, what happened)."""
    hub = RelayHub(config)
    where = f"{config.hub.edge_url} as hub {config.hub.id!r}"
    result = (True, f"ok: authenticated to {where}")
    handshake_failed = False
    try:
        async with open_relay_stream(config.edge_host, config.edge_port,
                                     ssl_context=hub.ssl_context(),
                                     connect_timeout=config.hub.connect_timeout) as stream:
            await authenticate(stream, config, await hub.next_timestamp())
            await stream.close()
    except* Rejected as group:
        result = (False, f"rejected by {where}: {leaves(group)[0]}")
    except* CONNECTION_ERRORS as group:
        result = (False, f"cannot connect to {where}: {describe(leaves(group)[0])}")
        handshake_failed = any(isinstance(e, HANDSHAKE_ERRORS) for e in leaves(group))
    if handshake_failed:
        wrong = None
        with trio.move_on_after(config.hub.connect_timeout):
            wrong = await not_relayd(config.hub.edge_url, config.hub.ca_file)
        if wrong:
            result = (False, f"cannot connect to {where}: {NOT_RELAYD.format(answer=wrong)}")
    return result


async def _serve(hub: RelayHub) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        systemd.notify("READY=1")
        interval = systemd.watchdog_interval()
        if interval is not None:
            nursery.start_soon(systemd.watchdog_pings, interval)
        await hub.stopped.wait()
        systemd.notify("STOPPING=1")
        nursery.cancel_scope.cancel()


EPILOG = f"""\
environment:
  {SECRET_ENV}  the hub secret; when set it overrides hub.secret_file

exit codes:
  0  stopped gracefully (--check: authenticated to the edge)
  1  --check: could not connect, or the edge rejected the hub
  2  configuration error, the message names the key

Every config key and its default: conf/relay-hub.toml in the source, or the README.
"""


def _parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "relay-hub", description="relay-hub: connects out to relayd and delivers its "
        "webhooks\nto the services on this network.",
        epilog=EPILOG, config_file="relay-hub.toml",
        check_help="validate the config, connect and authenticate once, print the result and "
                   "exit (default: run the hub)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_hub_config(args.config)
    except ConfigError as exc:
        print(f"relay-hub: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        accepted, text = trio.run(check, config)
        print(text)
        return 0 if accepted else 1
    hub = RelayHub(config)
    trio.run(run_until_signalled, lambda: _serve(hub), hub.request_shutdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
