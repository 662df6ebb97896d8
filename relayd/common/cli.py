"""The options both daemons take: ``--config``, ``--check``, ``--log-level``, ``--version``."""

from __future__ import annotations

import argparse
from importlib.metadata import version

from relayd.common.logs import DEFAULT_LEVEL, LEVELS

__all__ = ["daemon_parser"]


def daemon_parser(prog: str, *, description: str, epilog: str, config_file: str,
                  check_help: str) -> argparse.ArgumentParser:
    """An argument parser with the options every relayd daemon takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="PATH",
                        help=f"path to {config_file} (required; relative paths in it are "
                             "relative to its folder)")
    parser.add_argument("--check", action="store_true", help=check_help)
    parser.add_argument("--log-level", default=DEFAULT_LEVEL, choices=LEVELS,
                        metavar="LEVEL", help=f"{', '.join(LEVELS)} (default: %(default)s)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('relayd')}")
    return parser
