"""How `serve_http` treats a connection: keep-alive and its timer, a client that closes, a
graceful stop, 100-continue, malformed requests, the Date header, the ASGI scope, errors
of the app, HTTP/1.0, HTTP/2 (prior knowledge, h2c) and WebSocket handshakes.

These held with hypercorn serving every connection, and hold with relayd's own HTTP/1.1
server (`relayd.edge.http11`) in its place. A tiny ASGI app on real loopback sockets;
the timers are short configured intervals.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio
import trustme

from relayd.edge.config import ListenAddress
from relayd.edge.http import Receive, Scope, Send, send_json, serve_http

KEEP_ALIVE = 1.0  # the listener's keep_alive_timeout in these tests
# how much later than its deadline a timer may be seen to fire on a busy test machine
SLACK = 1.0


class App:
    """Answers 200 with the body's length and the path. ``/slow`` first waits for
    `release`; ``/fail`` raises; ``/silent`` answers nothing. A WebSocket handshake is
    refused."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.waiting = trio.Event()  # a request waits for `release`
        self.disconnected = trio.Event()  # receive() said the client has gone
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            self.waiting.set()
            await self.release.wait()
        elif scope["path"] == "/fail":
            raise RuntimeError("the app failed")
        elif scope["path"] == "/silent":
            return
        await send_json(send, 200, {"size": size, "path": scope["path"]})


@asynccontextmanager
async def serving(app: App, *, keep_alive: float = KEEP_ALIVE, max_connections: int = 100,
                  read_timeout: float = 30.0, tls: ssl.SSLContext | None = None,
                  ) -> AsyncIterator[tuple[ListenAddress, trio.Event]]:
    """`serve_http` on a free port; yields its address and the event that stops it.
    Closes the clients opened meanwhile."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        address = await nursery.start(partial(
            serve_http, app, ListenAddress("127.0.0.1", 0), name="test",
            shutdown_trigger=stop.wait, graceful_seconds=10.0,
            max_connections=max_connections, keep_alive_timeout=keep_alive,
            read_timeout=read_timeout, tls_context=None if tls is None else lambda: tls))
        try:
            yield address, stop
        finally:
            for client in Client.opened:
                await client.stream.aclose()
            Client.opened.clear()
            stop.set()


class Client:
    """One client connection that sends raw requests and reads the answers."""

    opened: list[Client] = []  # closed by `serving`

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        Client.opened.append(self)

    @classmethod
    async def connect(cls, address: ListenAddress) -> Client:
        return cls(await trio.open_tcp_stream(address.host, address.port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def post(self, path: str = "/", body: bytes = b"x") -> tuple[int, bytes]:
        await self.send(post_request(path, body))
        return await self.response()

    async def response(self) -> tuple[int, bytes]:
        """The next response's status and body."""
        status, _, body = await self.full_response()
        return status, body

    async def head(self) -> tuple[int, dict[bytes, bytes]]:
        """The next response's status and headers (the body left unread)."""
        while b"\r\n\r\n" not in self.buffer:
            await self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        return int(lines[0].split(b" ")[1]), {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:])}

    async def full_response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """The next response's status, headers and body (content-length framed)."""
        status, headers = await self.head()
        length = int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            await self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    async def wait_closed(self) -> float:
        """Read until the server closes the connection (nothing more may come); when."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset: closed as well
                data = b""
            assert data == b"", data
            if not data:
                return trio.current_time()

    async def _receive(self) -> None:
        data = await self.stream.receive_some(65536)
        assert data, "the server closed the connection"
        self.buffer += data


def post_request(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(), len(body), body)


async def with_timeout(seconds: float, call: Callable[[], Awaitable[float]]) -> float:
    with trio.fail_after(seconds):
        return await call()


async def test_an_idle_keep_alive_connection_closes_keep_alive_timeout_after_its_last_answer(
) -> None:
    async with serving(App()) as (address, _):
        client = await Client.connect(address)
        for _ in range(3):  # spaced closer than the timeout: the timer restarts each time
            assert (await client.post())[0] == 200
            answered = trio.current_time()
            await trio.sleep(KEEP_ALIVE * 0.5)
        closed = await with_timeout(KEEP_ALIVE + SLACK, client.wait_closed)
        assert KEEP_ALIVE - 0.05 <= closed - answered <= KEEP_ALIVE + SLACK


async def test_the_keep_alive_timer_does_not_run_while_the_app_works() -> None:
    app = App()
    async with serving(app) as (address, _):
        client = await Client.connect(address)
        await client.send(post_request("/slow", b"abc"))
        with trio.fail_after(5):
            await app.waiting.wait()
        await trio.sleep(KEEP_ALIVE * 1.5)  # the app working longer than the timeout
        app.release.set()
        with trio.fail_after(5):
            assert await client.response() == (200, b'{"size":3,"path":"/slow"}')
            assert (await client.post())[0] == 200  # and the connection is still kept


async def test_a_client_closing_an_idle_connection_frees_its_slot_at_once() -> None:
    # one slot, and a keep-alive timeout far longer than the test may take: the next
    # connection is served only if the server closed the first one when its client did
    async with serving(App(), keep_alive=60, max_connections=1) as (address, _):
        first = await Client.connect(address)
        assert (await first.post())[0] == 200
        await first.stream.aclose()
        second = await Client.connect(address)
        with trio.fail_after(5):
            assert (await second.post())[0] == 200
        await second.stream.aclose()
        never_asked = await Client.connect(address)  # closed before any request
        await never_asked.stream.aclose()
        third = await Client.connect(address)
        with trio.fail_after(5):
            assert (await third.post())[0] == 200


async def test_a_stop_closes_idle_connections_at_once_and_lets_a_request_finish() -> None:
    app = App()
    async with serving(app, keep_alive=60) as (address, stop):
        idle = await Client.connect(address)
        assert (await idle.post())[0] == 200
        busy = await Client.connect(address)
        await busy.send(post_request("/slow", b"abcd"))
        with trio.fail_after(5):
            await app.waiting.wait()
        stop.set()
        await with_timeout(5, idle.wait_closed)
        app.release.set()
        with trio.fail_after(5):
            assert await busy.response() == (200, b'{"size":4,"path":"/slow"}')
        await with_timeout(5, busy.wait_closed)  # not kept alive after the stop


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async with serving(App()) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                          b"Expect: 100-continue\r\n\r\n")
        with trio.fail_after(5):
            assert await client.response() == (100, b"")
            await client.send(b"hello")
            assert await client.response() == (200, b'{"size":5,"path":"/"}')


async def test_a_chunked_body_reaches_the_app_whole() -> None:
    async with serving(App()) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        with trio.fail_after(5):
            assert await client.response() == (200, b'{"size":7,"path":"/c"}')


async def test_a_malformed_request_is_answered_400_and_its_connection_closed() -> None:
    async with serving(App(), keep_alive=60) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: two\r\n\r\n")
        with trio.fail_after(5):
            assert (await client.response())[0] == 400
        await with_timeout(5, client.wait_closed)


async def test_every_answer_carries_the_current_date() -> None:
    async with serving(App(), keep_alive=60) as (address, _):
        client = await Client.connect(address)
        dates = []
        for _ in range(2):
            before = int(time.time())
            await client.send(post_request("/", b""))
            with trio.fail_after(5):
                _, headers, _ = await client.full_response()
            after = time.time()
            date = email.utils.parsedate_to_datetime(headers[b"date"].decode()).timestamp()
            assert before <= date <= after
            dates.append(date)
            await trio.sleep(1.05)
        assert dates[1] > dates[0]


async def test_requests_sent_in_one_write_are_answered_in_order() -> None:
    async with serving(App()) as (address, _):
        client = await Client.connect(address)
        await client.send(post_request("/1", b"a") + post_request("/2", b"bb")
                          + post_request("/3", b"ccc"))
        with trio.fail_after(5):
            assert [await client.response() for _ in range(3)] == [
                (200, b'{"size":%d,"path":"/%d"}' % (n, n)) for n in (1, 2, 3)]


async def test_the_scope_is_hypercorns() -> None:
    app = App()
    async with serving(app) as (address, _):
        client = await Client.connect(address)
        await client.send(b"PUT /a%20b/c?x=1%202&y HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\n"
                          b"x-two: 2\r\nContent-Length: 0\r\n\r\n")
        with trio.fail_after(5):
            assert (await client.response())[0] == 200
        local = client.stream.socket.getsockname()
    (scope,) = app.scopes
    assert scope == {
        "type": "http", "http_version": "1.1",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "method": "PUT", "scheme": "http", "path": "/a b/c", "raw_path": b"/a%20b/c",
        "query_string": b"x=1%202&y", "root_path": "",
        "headers": [(b"host", b"h"), (b"x-two", b"1"), (b"x-two", b"2"),
                    (b"content-length", b"0")],
        "client": local, "server": (address.host, address.port), "state": {},
        "extensions": {},
    }


async def test_a_head_answer_carries_no_body_and_the_connection_goes_on() -> None:
    async with serving(App()) as (address, _):
        client = await Client.connect(address)
        await client.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            status, headers = await client.head()
            assert (status, headers[b"content-length"]) == (200, b"22")  # {"size":0,"path":"/h"}
            # the app's body is not sent: the next bytes are the next answer's
            assert await client.post("/next", b"") == (200, b'{"size":0,"path":"/next"}')


async def test_an_app_that_fails_is_answered_500_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    async with serving(App(), keep_alive=60) as (address, _):
        client = await Client.connect(address)
        with trio.fail_after(5):
            assert await client.post("/fail") == (500, b"")
            await client.wait_closed()
            assert (await (await Client.connect(address)).post("/silent"))[0] == 500
    assert [(r.name, r.getMessage()) for r in caplog.records if r.exc_info] == [
        ("relayd.test", "Error in ASGI Framework")]


async def test_an_http_1_0_request_is_answered_and_its_connection_closed() -> None:
    async with serving(App(), keep_alive=60) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nab")
        with trio.fail_after(5):
            assert await client.response() == (200, b'{"size":2,"path":"/old"}')
            await client.wait_closed()


async def test_headers_over_16_kib_are_answered_431() -> None:
    async with serving(App(), keep_alive=60) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000)
        with trio.fail_after(5):
            assert (await client.response())[0] == 431
            await client.wait_closed()


async def test_a_body_cut_short_by_the_client_is_a_disconnect_for_the_app_and_400() -> None:
    app = App()
    async with serving(app, keep_alive=60) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        await client.stream.send_eof()
        with trio.fail_after(5):
            await app.disconnected.wait()
            assert (await client.response())[0] == 400
            await client.wait_closed()


async def test_a_body_that_stops_coming_is_a_disconnect_after_the_read_timeout() -> None:
    app = App()
    async with serving(app, keep_alive=60, read_timeout=0.5) as (address, _):
        client = await Client.connect(address)
        await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        sent = trio.current_time()
        with trio.fail_after(5):
            await app.disconnected.wait()
        assert 0.45 <= trio.current_time() - sent <= 0.5 + SLACK
        await with_timeout(5, client.wait_closed)


async def test_the_thousandth_request_of_a_connection_is_its_last() -> None:
    # hypercorn's keep_alive_max_requests
    async with serving(App(), keep_alive=60) as (address, _):
        client = await Client.connect(address)
        with trio.fail_after(30):
            for _ in range(999):
                await client.send(post_request("/", b""))
                _, headers, _ = await client.full_response()
                assert b"connection" not in headers
            await client.send(post_request("/", b""))
            _, headers, _ = await client.full_response()
            assert headers[b"connection"] == b"close"
            await client.wait_closed()


async def test_http2_with_prior_knowledge_is_served() -> None:
    async with serving(App()) as (address, _), httpx.AsyncClient(http1=False,
                                                                 http2=True) as client:
        for _ in range(2):
            response = await client.post(f"http://{address}/two", content=b"abc")
            assert (response.http_version, response.status_code, response.content) == (
                "HTTP/2", 200, b'{"size":3,"path":"/two"}')


async def test_an_h2c_upgrade_is_served_over_http2() -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection()  # the HTTP2-Settings value (base64)
    async with serving(App()) as (address, _):
        client = await Client.connect(address)
        await client.send(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
                          b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: "
                          + settings + b"\r\n\r\n")
        with trio.fail_after(5):
            status, headers = await client.head()
            assert (status, headers[b"upgrade"]) == (101, b"h2c")
            await client.send(conn.data_to_send())
            body, data = b"", client.buffer
            while True:
                events = conn.receive_data(data)
                await client.send(conn.data_to_send())
                body += b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
                if any(isinstance(e, h2.events.StreamEnded) for e in events):
                    break
                data = await client.stream.receive_some(65536)
    assert body == b'{"size":0,"path":"/up"}'


async def test_a_websocket_handshake_reaches_the_app_as_a_websocket() -> None:
    app = App()
    async with serving(app) as (address, _):
        client = await Client.connect(address)
        await client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n")
        with trio.fail_after(5):
            assert (await client.response())[0] == 403
    assert [scope["type"] for scope in app.scopes] == ["websocket"]


async def test_https_speaks_http11_or_h2_as_alpn_says_and_a_stalled_handshake_is_cut() -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    client = ssl.create_default_context()
    ca.configure_trust(client)
    app = App()
    async with serving(app, keep_alive=KEEP_ALIVE, tls=server) as (address, _):
        for http2 in (False, True):
            async with httpx.AsyncClient(verify=client, http2=http2) as https:
                response = await https.post(f"https://{address}/tls", content=b"ab")
            assert (response.http_version, response.status_code) == (
                "HTTP/2" if http2 else "HTTP/1.1", 200)
        assert [scope["scheme"] for scope in app.scopes] == ["https", "https"]
        silent = await Client.connect(address)  # never starts its handshake
        opened = trio.current_time()
        closed = await with_timeout(KEEP_ALIVE + SLACK, silent.wait_closed)
        assert KEEP_ALIVE - 0.05 <= closed - opened
