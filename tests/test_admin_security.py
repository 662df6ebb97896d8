"""The admin listener on a public box: token, cross-site refusals, Host check, no framing."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from relayd.edge.admin import AdminContext, build_admin_app
from relayd.edge.config import ConfigError, ListenAddress, load_config, parse_config
from relayd.edge.daemon import Relayd
from relayd.edge.http import serve_http
from tests.conftest import start_edge
from tests.helpers import SECRET

BIN = Path(sys.executable).parent
TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def write_token(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def guarded(nursery: trio.Nursery, tmp_path: Path) -> Relayd:
    """A running relayd whose (loopback) admin listener has a token."""
    token_file = write_token(tmp_path / "admin.token")
    return await start_edge(nursery, tmp_path, admin={"token_file": str(token_file)})


async def serve_with_probe(nursery: trio.Nursery, edge: Relayd) -> tuple[str, list[str]]:
    """``build_admin_app`` for ``edge`` plus a POST route (no mutating route exists yet).

    Returns the base URL and the list the route appends to each time it runs.
    """
    calls: list[str] = []

    async def mutate(request: Request) -> Response:
        calls.append(request.method)
        return JSONResponse({"done": True})

    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    assert edge.store is not None
    app = build_admin_app(AdminContext(edge.config, edge.store, edge.manager))
    app.router.routes.append(Route("/test/mutate", mutate, methods=["POST"]))
    app.router.routes.append(WebSocketRoute("/test/live", live))
    bound = await nursery.start(partial(serve_http, app, ListenAddress("127.0.0.1", 0),
                                        name="admin-probe", shutdown_trigger=trio.sleep_forever,
                                        graceful_seconds=0.1))
    return f"http://{bound}", calls


# --- the token -------------------------------------------------------------------------


async def test_without_the_token_the_api_answers_401_json(guarded: Relayd) -> None:
    url = f"http://{guarded.addresses.admin}/api/status"
    async with httpx.AsyncClient() as client:
        missing = await client.get(url)
        wrong = await client.get(url, headers=bearer("0" * 64))
        other_scheme = await client.get(url, headers={"Authorization": f"Basic {TOKEN}"})
        right = await client.get(url, headers=bearer())
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="relayd admin"'
    assert missing.json() == {"error": "unauthorized", "reason": "token required"}
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="relayd admin", error="invalid_token"'
    assert wrong.json() == {"error": "unauthorized", "reason": "wrong token"}
    assert other_scheme.status_code == 401
    assert right.status_code == 200 and right.json()["connected"] is False


async def test_probes_and_the_dashboard_page_are_served_alike_with_or_without_the_token(
    guarded: Relayd,
) -> None:
    base = f"http://{guarded.addresses.admin}"
    async with httpx.AsyncClient() as client:
        for path in ("/healthz", "/readyz", "/", "/static/app.js"):
            anonymous = await client.get(base + path)
            with_token = await client.get(base + path, headers=bearer())
            assert anonymous.status_code != 401, path
            assert (anonymous.status_code, anonymous.content) == \
                (with_token.status_code, with_token.content), path
        # public means reading them: anything else there needs the token
        assert (await client.post(base + "/healthz")).status_code == 401
        assert (await client.get(base + "/metrics")).status_code == 401


async def test_no_token_configured_on_loopback_means_open_as_before(edge: Relayd) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{edge.addresses.admin}/api/status")
    assert response.status_code == 200


async def test_a_non_loopback_listener_with_a_token_serves_any_host_name_with_the_token(
    nursery: trio.Nursery, tmp_path: Path,
) -> None:
    token_file = write_token(tmp_path / "admin.token")
    edge = await start_edge(nursery, tmp_path,
                            admin={"listen": "0.0.0.0:0", "token_file": str(token_file)})
    url = f"http://127.0.0.1:{edge.addresses.admin.port}/api/status"
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 401
        named = await client.get(url, headers={**bearer(), "Host": "relay.example.net"})
    assert named.status_code == 200


# --- configuration ---------------------------------------------------------------------


def admin_raw(admin: dict[str, str]) -> dict[str, object]:
    return {"admin": admin, "hub": {"secret_file": ""}}


HUB_ENV = {"RELAYD_HUB_SECRET": SECRET.decode()}


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "[::]:8081", "192.0.2.7:8081",
                                    "relay.example.net:8081"])
def test_a_non_loopback_admin_listener_without_a_token_is_a_config_error(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"^admin\.token_file: admin\.listen .* is not a "
                                          r"loopback address"):
        parse_config(admin_raw({"listen": listen}), environ=HUB_ENV)


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "127.0.0.2:8081", "[::1]:8081",
                                    "localhost:8081"])
def test_a_loopback_admin_listener_needs_no_token(listen: str) -> None:
    assert parse_config(admin_raw({"listen": listen}), environ=HUB_ENV).admin.token == b""


def test_the_token_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "admin.token")
    raw = admin_raw({"listen": "0.0.0.0:8081", "token_file": "admin.token"})
    admin = parse_config(raw, base_dir=tmp_path, environ=HUB_ENV).admin
    assert admin.token_file == token_file and admin.token == TOKEN.encode()
    assert TOKEN not in repr(admin)
    env_token = "e" * 32
    from_env = parse_config(raw, base_dir=tmp_path,
                            environ={**HUB_ENV, "RELAYD_ADMIN_TOKEN": env_token}).admin
    assert from_env.token == env_token.encode()
    only_env = parse_config(admin_raw({"listen": "0.0.0.0:8081"}),
                            environ={**HUB_ENV, "RELAYD_ADMIN_TOKEN": env_token}).admin
    assert only_env.token == env_token.encode()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    write_token(tmp_path / "admin.token", mode=0o644)
    raw = admin_raw({"token_file": "admin.token"})
    with pytest.raises(ConfigError, match=r"^admin\.token_file: .* accessible to other users "
                                          r"\(mode 0644\)") as info:
        parse_config(raw, base_dir=tmp_path, environ=HUB_ENV)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("token", ["short", "has space in the middle of it", "ünïcödé" * 4])
def test_a_token_that_is_guessable_or_cannot_be_sent_in_a_header_is_refused(
    tmp_path: Path, token: str,
) -> None:
    write_token(tmp_path / "admin.token", token)
    with pytest.raises(ConfigError, match=r"^admin\.token_file: the admin token must be at "
                                          r"least 16 characters"):
        parse_config(admin_raw({"token_file": "admin.token"}), base_dir=tmp_path,
                     environ=HUB_ENV)


def test_the_real_relayd_exits_2_naming_admin_token_file(tmp_path: Path) -> None:
    (tmp_path / "hub.secret").write_text("process-test-secret\n")
    (tmp_path / "hub.secret").chmod(0o600)
    config = tmp_path / "relayd.toml"
    config.write_text('[admin]\nlisten = "0.0.0.0:0"\n'
                      '[store]\npath = "relayd.db"\n[hub]\nsecret_file = "hub.secret"\n')
    env = {k: v for k, v in os.environ.items() if k != "RELAYD_ADMIN_TOKEN"}
    result = subprocess.run([str(BIN / "relayd"), "--config", str(config)], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "relayd: configuration error: admin.token_file: admin.listen 0.0.0.0:0 is not a " \
           "loopback address" in result.stderr
    assert not (tmp_path / "relayd.db").exists()  # stopped before opening anything


# --- cross-site requests ---------------------------------------------------------------


async def test_a_cross_site_post_is_refused_and_a_same_origin_one_runs(
    nursery: trio.Nursery, edge: Relayd,
) -> None:
    base, calls = await serve_with_probe(nursery, edge)
    url = base + "/test/mutate"
    refused = [
        {"Origin": "https://evil.example"},  # a browser without fetch metadata
        {"Origin": "null"},  # a sandboxed frame, a file:// page
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port or subdomain: another program
        {"Sec-Fetch-Site": "cross-site", "Origin": base},
    ]
    allowed = [
        {},  # relayctl, curl: no browser headers at all
        {"Sec-Fetch-Site": "same-origin", "Origin": base},  # the dashboard's own request
        {"Sec-Fetch-Site": "none"},  # typed by the user
        {"Origin": base},  # the dashboard in a browser without fetch metadata
    ]
    async with httpx.AsyncClient() as client:
        for headers in refused:
            response = await client.post(url, headers=headers)
            assert response.status_code == 403, headers
            assert response.json()["error"] == "forbidden", headers
            assert "refused" in response.json()["reason"]
        assert calls == []
        for headers in allowed:
            response = await client.post(url, headers=headers)
            assert response.status_code == 200, headers
        assert len(calls) == len(allowed)
        # reading cross-site is no risk: the browser withholds the answer (no CORS headers)
        status = await client.get(base + "/api/status", headers={"Sec-Fetch-Site": "cross-site"})
        assert status.status_code == 200


async def test_the_token_does_not_excuse_a_cross_site_post(
    nursery: trio.Nursery, guarded: Relayd,
) -> None:
    base, calls = await serve_with_probe(nursery, guarded)
    async with httpx.AsyncClient() as client:
        crossed = await client.post(base + "/test/mutate",
                                    headers={**bearer(), "Sec-Fetch-Site": "cross-site"})
        anonymous = await client.post(base + "/test/mutate")
        done = await client.post(base + "/test/mutate", headers=bearer())
    assert (crossed.status_code, anonymous.status_code, done.status_code) == (403, 401, 200)
    assert calls == ["POST"]


async def test_a_websocket_handshake_is_refused(nursery: trio.Nursery, edge: Relayd) -> None:
    base, _ = await serve_with_probe(nursery, edge)
    host, _, port = base.removeprefix("http://").rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET /test/live HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n".encode())
        with trio.fail_after(5):
            head = await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 403")


# --- DNS rebinding: the Host header ----------------------------------------------------


async def test_a_loopback_listener_refuses_a_foreign_host_name(edge: Relayd) -> None:
    admin = edge.addresses.admin
    url = f"http://{admin}/api/status"
    async with httpx.AsyncClient() as client:
        rebound = await client.get(url, headers={"Host": f"evil.example:{admin.port}"})
        assert rebound.status_code == 421
        assert rebound.json()["error"] == "misdirected request"
        assert "evil.example" in rebound.json()["reason"]
        for host in (f"127.0.0.1:{admin.port}", f"localhost:{admin.port}",
                     f"LocalHost.:{admin.port}", f"[::1]:{admin.port}",
                     "localhost:9000"):  # an SSH tunnel's local port
            response = await client.get(url, headers={"Host": host})
            assert response.status_code == 200, host


# --- framing ---------------------------------------------------------------------------


async def test_every_admin_response_forbids_framing_and_sniffing(guarded: Relayd) -> None:
    base = f"http://{guarded.addresses.admin}"
    async with httpx.AsyncClient() as client:
        responses = [await client.get(base + "/api/status", headers=bearer()),
                     await client.get(base + "/api/status"),
                     await client.get(base + "/nope", headers=bearer())]
    for response in responses:
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert response.headers["x-content-type-options"] == "nosniff"


# --- relayctl --------------------------------------------------------------------------

RELAYCTL = str(BIN / "relayctl")


async def relayctl(*args: str,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base_env = {k: v for k, v in os.environ.items() if k != "RELAYD_ADMIN_TOKEN"}
    return await trio.run_process([RELAYCTL, "status", *args], capture_stdout=True,
                                  capture_stderr=True, check=False, env={**base_env, **(env or {})})


async def test_relayctl_sends_the_token_from_option_environment_or_config(
    guarded: Relayd, tmp_path: Path,
) -> None:
    admin = f"http://{guarded.addresses.admin}"
    refused = await relayctl("--admin", admin)
    assert refused.returncode == 1 and refused.stdout == b""
    assert b"answered 401" in refused.stderr and b"--token-file PATH" in refused.stderr

    own_copy = write_token(tmp_path / "my.token")
    by_option = await relayctl("--admin", admin, "--token-file", str(own_copy))
    assert by_option.returncode == 0, by_option.stderr
    assert b"hub:         disconnected" in by_option.stdout

    by_env = await relayctl("--admin", admin, env={"RELAYD_ADMIN_TOKEN": TOKEN})
    assert by_env.returncode == 0, by_env.stderr

    config = tmp_path / "ctl.toml"
    config.write_text(f'[admin]\nlisten = "{guarded.addresses.admin}"\n'
                      'token_file = "admin.token"\n')
    by_config = await relayctl("--config", str(config))
    assert by_config.returncode == 0, by_config.stderr

    write_token(tmp_path / "wrong.token", "1" * 64)
    wrong = await relayctl("--admin", admin, "--token-file", str(tmp_path / "wrong.token"),
                           env={"RELAYD_ADMIN_TOKEN": TOKEN})  # the option wins
    assert wrong.returncode == 1 and b"answered 401" in wrong.stderr


async def test_relayctl_refuses_a_token_file_others_can_read(guarded: Relayd,
                                                             tmp_path: Path) -> None:
    loose = write_token(tmp_path / "loose.token", mode=0o644)
    result = await relayctl("--admin", f"http://{guarded.addresses.admin}",
                            "--token-file", str(loose))
    assert result.returncode == 2
    assert b"--token-file: " in result.stderr and b"accessible to other users" in result.stderr


def test_load_config_without_secrets_leaves_the_token_file_unread(tmp_path: Path) -> None:
    # relayctl reads the daemon's config only to find the listener and the token file
    config = tmp_path / "relayd.toml"
    config.write_text('[admin]\nlisten = "0.0.0.0:8081"\ntoken_file = "missing.token"\n')
    admin = load_config(config, load_secret=False, environ={}).admin
    assert admin.token_file == tmp_path / "missing.token" and admin.token == b""
