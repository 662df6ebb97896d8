"""relay-hub's HTTP/1.1 client against a scripted server on loopback: keep-alive reuse, and
what happens when a destination closes, stalls or cannot be verified."""

from __future__ import annotations

import ssl
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

from relayd.common.tomlconfig import ListenAddress
from relayd.hub.client import KEEPALIVE_SECONDS, DeliveryClient
from relayd.hub.delivery import DeliveryResult, deliver
from relayd.wire import pb

# What the server does with a request, one per request in order (then "answer"):
# answer (200, keep-alive); answer, then close the connection (no "Connection: close");
# answer with "Connection: close"; close without answering; never answer.
ANSWER, ANSWER_THEN_CLOSE, ANSWER_CONNECTION_CLOSE, CLOSE, STALL = (
    "answer", "answer then close", "answer connection close", "close", "stall")


class ScriptedServer:
    """HTTP/1.1 (h11) that counts connections and requests and acts on a script."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script: list[str] = []
        self.bodies: list[bytes] = []
        self.connections = 0  # accepted
        self.ended_by_client = 0  # connections the client closed (EOF while idle or waiting)
        self.closed_by_server = 0
        self.changed = trio.Event()
        self.address: ListenAddress | None = None
        self._ssl_context = ssl_context

    def url(self, path: str = "/hook") -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self.address}{path}"

    async def wait_for(self, predicate: object, within: float = 5.0) -> None:
        with trio.fail_after(within):
            while not predicate():  # type: ignore[operator]
                await self.changed.wait()

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        sockets = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = ListenAddress("127.0.0.1", int(sockets[0].socket.getsockname()[1]))
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(sockets)
        if self._ssl_context is not None:
            listeners = [trio.SSLListener(s, self._ssl_context) for s in sockets]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started()

    async def _connection(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        self._note()
        conn = h11.Connection(h11.SERVER)
        body = b""
        async with stream:
            while True:
                try:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            self.ended_by_client += 1
                            self._note()
                            return
                        conn.receive_data(bytes(data))
                    elif isinstance(event, h11.Request):
                        body = b""
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        self.bodies.append(body)
                        step = self.script.pop(0) if self.script else ANSWER
                        self._note()
                        if step in (ANSWER, ANSWER_THEN_CLOSE, ANSWER_CONNECTION_CLOSE):
                            await self._answer(stream, conn, step)
                        if step in (ANSWER_THEN_CLOSE, CLOSE):
                            self.closed_by_server += 1
                            self._note()
                            return
                        if step in (STALL, ANSWER_CONNECTION_CLOSE):
                            await self._wait_for_client_close(stream)
                            return
                        conn.start_next_cycle()
                except (h11.ProtocolError, trio.BrokenResourceError):
                    return

    async def _answer(self, stream: trio.abc.Stream, conn: h11.Connection, step: str) -> None:
        headers = [("content-length", "2")]
        if step == ANSWER_CONNECTION_CLOSE:
            headers.append(("connection", "close"))
        for event in (h11.Response(status_code=200, headers=headers), h11.Data(data=b"ok"),
                      h11.EndOfMessage()):
            await stream.send_all(conn.send(event) or b"")

    async def _wait_for_client_close(self, stream: trio.abc.Stream) -> None:
        while await stream.receive_some(65536):
            pass
        self.ended_by_client += 1
        self._note()


@pytest.fixture
async def server(nursery: trio.Nursery) -> ScriptedServer:
    server = ScriptedServer()
    await nursery.start(server.serve)
    return server


def envelope(n: int) -> pb.WebhookEnvelope:
    return pb.WebhookEnvelope(id=f"w{n}", attempt=1, method="POST", payload=b"body %d" % n,
                              headers={"content-type": "text/plain"})


async def send(client: DeliveryClient, server: ScriptedServer, n: int,
               deadline: float = 5.0) -> DeliveryResult:
    return await deliver(client, server.url(), envelope(n), deadline)


async def test_deliveries_to_one_destination_reuse_one_connection(
        server: ScriptedServer) -> None:
    with DeliveryClient(max_idle=4) as client:
        results = [await send(client, server, n) for n in range(5)]
    assert all(r.success and r.status_code == 200 for r in results)
    assert server.bodies == [b"body %d" % n for n in range(5)]
    assert server.connections == 1
    # closing the client closes its idle connection
    await server.wait_for(lambda: server.ended_by_client == 1)


async def test_a_connection_the_destination_closed_while_idle_is_not_reused(
        server: ScriptedServer) -> None:
    server.script = [ANSWER_THEN_CLOSE]
    with DeliveryClient(max_idle=4) as client:
        assert (await send(client, server, 1)).success
        await server.wait_for(lambda: server.closed_by_server == 1)
        # the FIN is in: the next request goes on a new connection, not into the closed one
        second = await send(client, server, 2)
    assert second.success, second.error
    assert server.connections == 2


async def test_an_answer_with_connection_close_ends_the_connection(
        server: ScriptedServer) -> None:
    server.script = [ANSWER_CONNECTION_CLOSE]
    with DeliveryClient(max_idle=4) as client:
        assert (await send(client, server, 1)).success
        await server.wait_for(lambda: server.ended_by_client == 1)  # the client closed it
        assert (await send(client, server, 2)).success
    assert server.connections == 2


async def test_a_destination_closing_without_answering_is_a_transient_failure(
        server: ScriptedServer) -> None:
    server.script = [CLOSE]
    with DeliveryClient(max_idle=4) as client:
        failed = await send(client, server, 1)
        assert (failed.success, failed.permanent, failed.status_code) == (False, False, 0)
        assert failed.error == \
            "RemoteProtocolError: Server disconnected without sending a response."
        assert (await send(client, server, 2)).success
    assert server.connections == 2


async def test_a_slow_destination_hits_the_deadline_and_its_connection_is_closed(
        server: ScriptedServer) -> None:
    server.script = [STALL]
    with DeliveryClient(max_idle=4) as client:
        slow = await send(client, server, 1, deadline=0.2)
        assert (slow.success, slow.permanent, slow.error) == \
            (False, False, "timeout after 0.2s")
        # the request cut short left the connection in an unknown state: it was closed
        await server.wait_for(lambda: server.ended_by_client == 1)
        assert (await send(client, server, 2)).success
    assert server.connections == 2


async def test_a_connection_idle_for_the_keepalive_time_is_not_reused(
        server: ScriptedServer, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0.05  # real sockets: jump only when truly idle
    with DeliveryClient(max_idle=4) as client:
        assert (await send(client, server, 1)).success
        await trio.sleep(KEEPALIVE_SECONDS - 1)
        assert (await send(client, server, 2)).success
        assert server.connections == 1
        await trio.sleep(KEEPALIVE_SECONDS)
        assert (await send(client, server, 3)).success
        assert server.connections == 2
        await server.wait_for(lambda: server.ended_by_client == 1)  # the expired one


async def test_idle_connections_beyond_max_idle_are_closed(nursery: trio.Nursery) -> None:
    servers = [ScriptedServer() for _ in range(3)]
    for s in servers:
        await nursery.start(s.serve)
    with DeliveryClient(max_idle=2) as client:
        for s in servers:
            assert (await send(client, s, 1)).success
        # three destinations, two idle connections kept: the least recently used went
        await servers[0].wait_for(lambda: servers[0].ended_by_client == 1)
        assert [s.ended_by_client for s in servers] == [1, 0, 0]


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context trusting its private CA."""
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def test_https_destination_is_verified_and_its_connection_reused(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    server_context, client_context = _tls(tmp_path)
    server = ScriptedServer(server_context)
    await nursery.start(server.serve)
    with DeliveryClient(max_idle=4, ssl_context=client_context) as client:
        results = [await send(client, server, n) for n in range(3)]
    assert all(r.success for r in results)
    assert server.bodies == [b"body 0", b"body 1", b"body 2"] and server.connections == 1


async def test_https_destination_with_an_unknown_ca_is_a_transient_connect_error(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    server_context, _ = _tls(tmp_path)
    server = ScriptedServer(server_context)
    await nursery.start(server.serve)
    with DeliveryClient(max_idle=4) as client:  # the default trust: public CAs
        result = await send(client, server, 1)
    assert (result.success, result.permanent) == (False, False)
    assert result.error.startswith("ConnectError: ") and \
        "CERTIFICATE_VERIFY_FAILED" in result.error
    assert server.bodies == []


@pytest.mark.parametrize(("url", "error"), [
    ("ftp://d/hook", "UnsupportedProtocol: Request URL has an unsupported protocol 'ftp://'."),
    ("http:///hook",
     "UnsupportedProtocol: Request URL is missing an 'http://' or 'https://' protocol."),
    ("http://[::1/hook", "InvalidURL: Invalid port: ':1'"),
])
async def test_a_url_that_cannot_be_sent_to_is_a_transient_failure_in_httpx_words(
        url: str, error: str) -> None:
    with DeliveryClient(max_idle=1) as client:
        result = await deliver(client, url, envelope(1), 5)
    assert (result.success, result.permanent, result.error) == (False, False, error)
