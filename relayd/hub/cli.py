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
from relayd.common.logs import setup_logging
from relayd.common.runner import describe, leaves, run_until_signalled
from relayd.hub.config import ConfigError, HubConfig, load_hub_config
from relayd.hub.daemon import CONNECTION_ERRORS, Rejected, RelayHub, authenticate
from relayd.transport.client import open_relay_stream

__all__ = ["main"]

log = logging.getLogger("relay-hub")


async def check(config: HubConfig) -> tuple[bool, str]:
    """Connect and authenticate once; return (accepted, what happened)."""
    hub = RelayHub(config)
    where = f"{config.hub.edge_url} as hub {config.hub.id!r}"
    result = (True, f"ok: authenticated to {where}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay-hub",
                                     description="relay-hub: deliver relayd webhooks at home")
    parser.add_argument("--config", required=True, help="path to relay-hub.toml")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, try one connect, print the result")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
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
