"""What the public ingress may hold: open connections, and body bytes in flight."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from relayd.edge.config import ConfigError, Endpoint, ListenAddress, load_config
from relayd.edge.http import serve_http
from relayd.edge.ingest import IngestBatcher
from relayd.edge.ingress import IngressApp
from relayd.edge.store import Store
from tests.conftest import start_edge
from tests.helpers import wait_for

KIB = 1024
ENV = {"RELAYD_HUB_SECRET": "from-env"}


def head(length: int | None, *, close: bool = False) -> bytes:
    """Request headers for ``/h/alpha``; ``length`` None: a chunked body."""
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    connection = b"Connection: close\r\n" if close else b""
    return b"POST /h/alpha HTTP/1.1\r\nHost: x\r\n" + connection + framing + b"\r\n\r\n"


async def read_response(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection or a response is complete."""
    answer = b""
    try:
        while data := await stream.receive_some(65536):
            answer += data
            header_end = answer.find(b"\r\n\r\n")
            if header_end >= 0:
                length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(answer) >= header_end + 4 + length:
                    break
    except trio.BrokenResourceError:  # a reset after the answer: the answer still counts
        pass
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def json_body(answer: bytes) -> object:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


# -- max_connections ---------------------------------------------------------------


async def test_connections_over_max_connections_wait_until_one_closes(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    # header_timeout long enough that the idle connections are not cut during the test
    edge = await start_edge(nursery, tmp_path,
                            ingress={"max_connections": 4, "header_timeout": 30})
    address = edge.addresses.ingress
    idle = [await trio.open_tcp_stream(address.host, address.port) for _ in range(4)]
    waiting = await trio.open_tcp_stream(address.host, address.port)
    await waiting.send_all(head(2) + b"{}")
    # the fifth connection is in the listen backlog, not accepted: no answer
    with trio.move_on_after(0.5) as unanswered:
        await waiting.receive_some(65536)
    assert unanswered.cancelled_caught
    # one idle connection closes: the waiting one is accepted and served
    await idle.pop().aclose()
    with trio.fail_after(5):
        assert status_of(await read_response(waiting)) == 202
    # the other idle connections were held open all along, and are served too
    for stream in idle:
        await stream.send_all(head(2) + b"{}")
        with trio.fail_after(5):
            assert status_of(await read_response(stream)) == 202
    for stream in [*idle, waiting]:
        await stream.aclose()
    assert (await edge.store.counts())["pending"] == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_connections = 0", "ingress.max_connections: must be a positive integer"),
        ("max_inflight_bytes = 0", "ingress.max_inflight_bytes: must be a positive integer"),
        ("max_body_bytes = 2048\nmax_inflight_bytes = 1024",
         "ingress.max_inflight_bytes: must be >= ingress.max_body_bytes"),
    ],
)
def test_bad_ingress_bounds_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "relayd.toml"
    path.write_text(f"[ingress]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=ENV)


def test_ingress_bound_defaults(tmp_path: Path) -> None:
    path = tmp_path / "relayd.toml"
    path.write_text("")
    ingress = load_config(path, environ=ENV).ingress
    assert ingress.max_connections == 1024 and ingress.max_inflight_bytes == 64 * 1024 * 1024


# -- max_inflight_bytes --------------------------------------------------------------

MAX_BODY = 400 * KIB
MAX_INFLIGHT = 1000 * KIB


@pytest.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[tuple[IngressApp, ListenAddress, Store]]:
    """An IngressApp over a real store, served on loopback with a small byte budget."""
    async with Store.open(tmp_path / "relayd.db") as store, trio.open_nursery() as nursery:
        batcher = IngestBatcher(store)
        await nursery.start(batcher.run)
        app = IngressApp([Endpoint("alpha", "http://127.0.0.1:9/alpha")], batcher,
                         max_body_bytes=MAX_BODY, max_inflight_bytes=MAX_INFLIGHT)
        address = await nursery.start(partial(
            serve_http, app, ListenAddress("127.0.0.1", 0), name="ingress",
            shutdown_trigger=trio.sleep_forever, graceful_seconds=0.5, max_connections=64))
        yield app, address, store
        nursery.cancel_scope.cancel()


async def test_uploads_over_max_inflight_bytes_get_503_and_the_budget_comes_back(
        ingress: tuple[IngressApp, ListenAddress, Store], caplog: pytest.LogCaptureFixture
) -> None:
    app, address, store = ingress

    async def connect() -> trio.SocketStream:
        return await trio.open_tcp_stream(address.host, address.port)

    def inflight() -> int:
        return app.statistics().inflight_bytes

    # two large uploads within the bound: headers and a first part of the body
    a, b = await connect(), await connect()
    for stream, fill in ((a, b"a"), (b, b"b")):
        await stream.send_all(head(MAX_BODY) + fill * KIB)
    await wait_for(lambda: inflight() == 2 * MAX_BODY)
    # a third announced one does not fit: 503 at once, before its body is sent
    c = await connect()
    await c.send_all(head(MAX_BODY))
    with trio.fail_after(5):
        answer = await read_response(c)
    assert status_of(answer) == 503 and b"\r\nretry-after: 5\r\n" in answer.lower()
    assert json_body(answer) == {"error": "too many uploads in progress, retry later"}
    # a chunked one is refused as soon as its chunks pass what is left (200 KiB)
    d = await connect()
    await d.send_all(head(None))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async def trickle() -> None:
                for _ in range(10):
                    try:
                        await d.send_all(b"%x\r\n%s\r\n" % (50 * KIB, b"d" * 50 * KIB))
                    except trio.BrokenResourceError:
                        return
            nursery.start_soon(trickle)
            answer = await read_response(d)
    assert status_of(answer) == 503 and b"\r\nretry-after: 5\r\n" in answer.lower()
    await wait_for(lambda: inflight() == 2 * MAX_BODY)
    # a client that goes away mid-body gives its reservation back
    e = await connect()
    await e.send_all(head(100 * KIB) + b"e" * KIB)
    await wait_for(lambda: inflight() == 2 * MAX_BODY + 100 * KIB)
    await e.aclose()
    await wait_for(lambda: inflight() == 2 * MAX_BODY)
    # the uploads within the bound complete and are stored
    ids = []
    for stream, fill in ((a, b"a"), (b, b"b")):
        await stream.send_all(fill * (MAX_BODY - KIB))
        with trio.fail_after(5):
            answer = await read_response(stream)
        assert status_of(answer) == 202
        ids.append(json_body(answer)["id"])  # type: ignore[index]
    # the budget is whole again: a new upload of the largest size is taken
    await wait_for(lambda: inflight() == 0)
    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://{address}/h/alpha", content=b"f" * MAX_BODY)
    assert response.status_code == 202
    ids.append(response.json()["id"])
    for wid, fill in zip(ids, (b"a", b"b", b"f"), strict=True):
        row = await store.get(wid)
        assert row is not None and row["body"] == fill * MAX_BODY
    assert (await store.counts())["pending"] == 3
    for stream in (a, b, c, d):
        await stream.aclose()
    # two refusals, one log line (the rest are summarised)
    refused = [r for r in caplog.records
               if r.levelno == logging.WARNING and "upload refused (503)" in r.getMessage()]
    assert len(refused) == 1
