"""Hostile clients on the public ingress: slow, odd or many; relayd keeps serving."""

from __future__ import annotations

from pathlib import Path

import h2.config
import h2.connection
import httpx
import pytest
import trio

from relayd.edge.daemon import Relayd
from tests.conftest import start_edge
from tests.helpers import post


async def raw_http(edge: Relayd, chunks: list[bytes], pause: float) -> tuple[bytes, float]:
    """Send ``chunks`` with ``pause`` between them; return the answer and when it ended."""
    stream = await trio.open_tcp_stream(edge.addresses.ingress.host, edge.addresses.ingress.port)
    started = trio.current_time()
    answer = b""

    async def trickle() -> None:
        for chunk in chunks:
            try:
                await stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(pause)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        with trio.fail_after(10):
            try:
                while data := await stream.receive_some(65536):
                    answer += data
            except trio.BrokenResourceError:
                pass
        nursery.cancel_scope.cancel()
    return answer, trio.current_time() - started


async def test_slow_headers_are_cut_after_header_timeout(nursery: trio.Nursery,
                                                         tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, ingress={"header_timeout": 0.5})
    request = b"POST /h/alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Slow: " + b"a" * 50
    answer, took = await raw_http(edge, [bytes([b]) for b in request], pause=0.05)
    assert answer == b"" and took < 2.0  # closed long before the 50 x 0.05 s trickle ends
    assert (await edge.store.counts())["pending"] == 0


async def test_slow_body_is_408_and_not_stored(nursery: trio.Nursery, tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path, ingress={"read_timeout": 0.5})
    head = b"POST /h/alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    answer, took = await raw_http(edge, [head] + [b"x"] * 100, pause=0.05)
    assert answer.startswith(b"HTTP/1.1 408 ") and took < 2.0
    assert (await edge.store.counts())["pending"] == 0


async def test_oversized_body_is_refused_before_it_is_read(nursery: trio.Nursery,
                                                           tmp_path: Path) -> None:
    edge = await start_edge(nursery, tmp_path)
    head = (b"POST /h/alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    # a 1 GB body is announced, a few bytes are sent: the 413 comes without waiting for more
    answer, took = await raw_http(edge, [head, b"x" * 1000], pause=5)
    assert answer.startswith(b"HTTP/1.1 413 ") and took < 4.0


async def test_non_utf8_header_bytes_are_kept_byte_exact(edge: Relayd) -> None:
    head = (b"POST /h/alpha HTTP/1.1\r\nHost: x\r\nX-Odd: \xff\xfe caf\xe9\r\n"
            b"Content-Length: 2\r\n\r\nok")
    answer, _ = await raw_http(edge, [head], pause=0)
    assert answer.startswith(b"HTTP/1.1 202 ")
    rows = await edge.store.next_pending([("alpha", 0, 1)])
    [webhook] = rows["alpha"]
    value = dict(webhook.headers)["x-odd"]
    assert value.encode("latin-1") == b"\xff\xfe caf\xe9"


async def test_a_thousand_concurrent_connections_all_answered(edge: Relayd) -> None:
    url = f"http://{edge.addresses.ingress}/h/beta"
    codes: list[int] = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            codes.append((await client.post(url, content=f"{i}".encode())).status_code)

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(one, i)
    assert codes.count(202) == 1000
    assert (await edge.store.counts())["pending"] == 1000
    assert (await post(edge.addresses.ingress, "alpha", b"after")).status_code == 202


async def test_a_request_hypercorn_cannot_parse_ends_only_its_connection(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # hypercorn decodes an HTTP/2 :path as ASCII before the app sees it; a UTF-8 byte in it
    # raised UnicodeDecodeError out of the connection and stopped relayd
    edge = await start_edge(nursery, tmp_path)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                validate_outbound_headers=False))
    conn.initiate_connection()
    conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"),
                          (b":authority", b"relay"), (b":path", b"/h/alpha/\xc3\xa9")],
                      end_stream=True)
    stream = await trio.open_tcp_stream(edge.addresses.ingress.host, edge.addresses.ingress.port)
    async with stream:
        await stream.send_all(conn.data_to_send())
        with trio.fail_after(5):
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass  # the edge may reset the connection: it is the expected outcome
    assert (await post(edge.addresses.ingress, "alpha")).status_code == 202
    assert "ingress connection closed: the HTTP server could not handle" in caplog.text
