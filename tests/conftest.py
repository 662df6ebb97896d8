from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from relayd.edge.daemon import Relayd
from tests.destination import Destination, RawDestination
from tests.helpers import make_config
from tests.system import System


@pytest.fixture
async def edge(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Relayd]:
    """A running relayd (in this process) with loopback listeners on free ports."""
    daemon = Relayd(make_config(tmp_path))
    await nursery.start(daemon.run)
    yield daemon


async def start_edge(nursery: trio.Nursery, tmp_path: Path, *,
                     store: dict[str, object] | None = None,
                     ingress: dict[str, object] | None = None,
                     admin: dict[str, object] | None = None, **relay: object) -> Relayd:
    daemon = Relayd(make_config(tmp_path, store=store, ingress=ingress, admin=admin, **relay))
    await nursery.start(daemon.run)
    return daemon


@asynccontextmanager
async def running_system(nursery: trio.Nursery, tmp_path: Path,
                         destination: Destination | RawDestination) -> AsyncIterator[System]:
    """`System` around ``destination`` (served in ``nursery``); its daemons stopped after."""
    await nursery.start(destination.serve)
    sys_ = System(tmp_path, destination)
    try:
        yield sys_
    finally:
        await sys_.hub.stop()
        await sys_.edge.stop()


@pytest.fixture
async def system(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[System]:
    async with running_system(nursery, tmp_path, Destination()) as sys_:
        yield sys_


