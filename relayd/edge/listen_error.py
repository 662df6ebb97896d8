"""Naming the config key when one of relayd's listeners cannot be set up.

bind(2) says only "Address already in use", and relayd has three listeners. The daemon
starts each inside `naming_listener`, which turns the `OSError` into a `ListenError` that
says which key to fix: ``ingress.listen: 127.0.0.1:8080 is already in use``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from relayd.common.runner import describe, leaves
from relayd.common.tomlconfig import ListenAddress

__all__ = ["ListenError", "naming_listener"]


class ListenError(Exception):
    """A listener could not be set up; the message names the config key and the address."""

    def __init__(self, key: str, address: ListenAddress, error: OSError) -> None:
        if isinstance(error, socket.gaierror):
            text = f"{key}: {address}: unknown host ({error.strerror})"
        elif error.errno == errno.EADDRINUSE:
            text = f"{key}: {address} is already in use"
        elif error.errno == errno.EADDRNOTAVAIL:
            text = f"{key}: {address}: not an address of this machine"
        elif error.errno == errno.EACCES:
            text = f"{key}: {address}: permission denied (ports below 1024 need privileges)"
        else:
            text = f"{key}: cannot listen on {address}: {error.strerror or describe(error)}"
        super().__init__(text)
        self.key = key
        self.address = address


@contextmanager
def naming_listener(key: str, address: ListenAddress) -> Iterator[None]:
    """Raise an `OSError` from inside (starting the listener for ``key``) as a `ListenError`."""
    try:
        yield
    except* OSError as group:
        errors = [leaf for leaf in leaves(group) if isinstance(leaf, OSError)]
        raise ListenError(key, address, errors[0]) from group
