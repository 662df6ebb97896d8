"""relayd.edge._hypercorn relies on hypercorn internals: fail loudly when they change."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect

import pytest

from relayd.edge._hypercorn import HYPERCORN_VERSION, RELIED_SOURCE_SHA256


def test_installed_hypercorn_is_the_one_the_shim_was_written_against() -> None:
    assert importlib.metadata.version("hypercorn") == HYPERCORN_VERSION


@pytest.mark.parametrize("name", sorted(RELIED_SOURCE_SHA256))
def test_relied_on_hypercorn_source_is_unchanged(name: str) -> None:
    module, attribute = name.rsplit(".", 1)
    source = inspect.getsource(getattr(importlib.import_module(module), attribute))
    assert hashlib.sha256(source.encode()).hexdigest() == RELIED_SOURCE_SHA256[name], (
        f"{name} changed: re-read relayd/edge/_hypercorn.py against it, then update the hash")
