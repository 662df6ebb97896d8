"""HTTPS on the ingress and admin listeners, and certificates re-read on SIGHUP."""

from __future__ import annotations

import logging
import os
import signal
import ssl
from pathlib import Path

import h11
import httpx
import pytest
import trio
import trustme

from relayd.edge.config import ConfigError, ListenAddress
from tests.conftest import start_edge
from tests.helpers import make_config
from tests.processes import BIN, Daemon, write_edge_config

READY = r"relayd ready grpc=\S+ ingress=(\S+):(\d+) admin=\S+"


def issue(ca: trustme.CA, folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 whose subject's common name is ``name``."""
    leaf = ca.issue_cert("127.0.0.1", common_name=name)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def replace_file(source: Path, target: Path) -> None:
    """As certbot and acme.sh do: the new file appears whole, under the old name."""
    temporary = target.with_suffix(".new")
    temporary.write_bytes(source.read_bytes())
    os.replace(temporary, target)


class KeepAlive:
    """One HTTPS connection, kept open, sending HTTP/1.1 requests one after another."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, address: ListenAddress, ca: trustme.CA) -> KeepAlive:
        stream = await trio.open_ssl_over_tcp_stream(
            address.host, address.port, ssl_context=client_context(ca))
        await stream.do_handshake()
        return cls(stream)

    def subject_name(self) -> str:
        """The common name of the certificate this connection was set up with."""
        peer = self.stream.getpeercert()
        assert peer is not None
        return dict(pair[0] for pair in peer["subject"])["commonName"]

    async def post(self, path: str, body: bytes = b"{}") -> int:
        """Send one request and read its whole response; return the status."""
        for event in (h11.Request(method="POST", target=path, headers=[
                ("host", "127.0.0.1"), ("content-length", str(len(body)))]),
                h11.Data(data=body), h11.EndOfMessage()):
            await self.stream.send_all(self.h11.send(event) or b"")
        status = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                self.h11.start_next_cycle()
                return status

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_https_post_is_accepted_over_http1_and_h2(nursery: trio.Nursery,
                                                       tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = issue(ca, tmp_path, "first")
    edge = await start_edge(nursery, tmp_path, ingress={"tls_cert": str(cert),
                                                        "tls_key": str(key)})
    assert edge.addresses is not None
    url = f"https://{edge.addresses.ingress}/h/alpha"
    for http2 in (False, True):
        async with httpx.AsyncClient(verify=client_context(ca), http2=http2) as client:
            response = await client.post(url, content=b"{}")
        assert response.status_code == 202
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    # plain HTTP on the HTTPS port is not served
    with pytest.raises(httpx.HTTPError):
        async with httpx.AsyncClient() as client:
            await client.post(f"http://{edge.addresses.ingress}/h/alpha", content=b"{}")


async def test_admin_listener_serves_https(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = issue(ca, tmp_path, "admin")
    edge = await start_edge(nursery, tmp_path, admin={"tls_cert": str(cert),
                                                      "tls_key": str(key)})
    assert edge.addresses is not None
    async with httpx.AsyncClient(verify=client_context(ca)) as client:
        response = await client.get(f"https://{edge.addresses.admin}/healthz")
    assert response.status_code == 200


async def test_broken_certificate_on_reload_keeps_the_old_one_and_is_logged(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = trustme.CA()
    cert, key = issue(ca, tmp_path, "first")
    edge = await start_edge(nursery, tmp_path, ingress={"tls_cert": str(cert),
                                                        "tls_key": str(key)})
    assert edge.addresses is not None
    cert.write_text("-----BEGIN CERTIFICATE-----\nhalf written")
    edge.reload()
    assert any(record.levelno == logging.ERROR and "ingress.tls_cert" in record.getMessage()
               and "still serving the previous certificate" in record.getMessage()
               for record in caplog.records)
    connection = await KeepAlive.open(edge.addresses.ingress, ca)
    try:
        assert connection.subject_name() == "first"
        assert await connection.post("/h/alpha") == 202
    finally:
        await connection.aclose()


async def test_sighup_serves_the_new_certificate_to_new_connections_only(
        tmp_path: Path) -> None:
    ca = trustme.CA()
    first_cert, first_key = issue(ca, tmp_path, "first")
    second_cert, second_key = issue(ca, tmp_path, "second")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    replace_file(first_cert, cert)
    replace_file(first_key, key)
    config = write_edge_config(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
                                         "header_timeout = 30")
    daemon = Daemon([str(BIN / "relayd"), "--config", str(config)], tmp_path / "relayd.log")
    await daemon.start()
    try:
        ready = await daemon.wait_log(READY)
        address = ListenAddress(ready.group(1), int(ready.group(2)))
        old = await KeepAlive.open(address, ca)
        assert old.subject_name() == "first"
        assert await old.post("/h/github") == 202

        replace_file(second_cert, cert)
        replace_file(second_key, key)
        daemon.send_signal(signal.SIGHUP)
        await daemon.wait_log("ingress TLS certificate reloaded")

        new = await KeepAlive.open(address, ca)
        assert new.subject_name() == "second"
        assert await new.post("/h/github") == 202
        # the connection opened before the reload is still served, on its certificate
        assert await old.post("/h/github") == 202
        assert old.subject_name() == "first"
        await new.aclose()
        await old.aclose()

        daemon.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        await daemon.stop()


def test_tls_cert_without_tls_key_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ingress\.tls_key: "):
        make_config(tmp_path, ingress={"tls_cert": "cert.pem"})
    with pytest.raises(ConfigError, match=r"^admin\.tls_cert: "):
        make_config(tmp_path, admin={"tls_key": "key.pem"})
