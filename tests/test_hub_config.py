"""relay-hub's config, header forwarding and classification rules (no network)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from relayd.hub.backoff import Backoff
from relayd.hub.config import ConfigError, load_hub_config
from relayd.hub.delivery import classify, forwarded_headers, request_target
from relayd.wire import pb

ROOT = Path(__file__).resolve().parents[1]
ENV = {"RELAY_HUB_SECRET": "hub-env-secret"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay-hub.toml"
    path.write_text(text)
    return path


def test_example_hub_configs_load() -> None:
    config = load_hub_config(ROOT / "conf" / "relay-hub.toml", environ=ENV)
    assert config.hub.id == "home" and config.edge_tls and config.edge_port == 50051
    assert config.edge_host == "edge.example.org" and config.hub.ca_file is None
    assert config.hub.endpoint_ids == () and config.hub.max_concurrent_deliveries == 16
    assert config.destinations == {"github": "http://192.168.1.10:8080/github"}
    assert config.hub.secret == b"hub-env-secret"
    assert config.hub.add_forwarded_for is False
    local = load_hub_config(ROOT / "conf" / "relay-hub.local.toml", environ=ENV)
    assert not local.edge_tls and local.edge_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hub]\nedge = \"x\"\n", "hub.edge: unknown key"),
        ("[hubs]\n", "hubs: unknown key"),
        ("[hub]\nedge_url = \"ftp://x:1\"\n", "hub.edge_url: must be http://host:port"),
        ("[hub]\nedge_url = \"http://x:99999\"\n", "hub.edge_url"),
        ("[hub]\nedge_url = \"http://x:1/path\"\n", "hub.edge_url"),
        ("[hub]\nmax_concurrent_deliveries = 0\n", "hub.max_concurrent_deliveries"),
        ("[hub]\ndelivery_timeout = \"30\"\n", "hub.delivery_timeout: must be a positive"),
        ("[hub]\nendpoint_ids = \"github\"\n", "hub.endpoint_ids: must be an array"),
        ("[hub]\nca_file = \"missing.pem\"\n", "hub.ca_file: .*missing.pem is not a readable"),
        ("[destinations]\ngithub = 3\n", "destinations.github: must be an http"),
        ("[hub]\nheartbeat_interval = 31\n",
         r"hub.stale_timeout: must be at least 2 x hub.heartbeat_interval \(60 < 2 x 31\)"),
        ("[hub]\nstale_timeout = 59.5\n",
         r"hub.stale_timeout: must be at least 2 x hub.heartbeat_interval \(59.5 < 2 x 30\)"),
    ],
)
def test_bad_hub_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_hub_config(write(tmp_path, text), environ=ENV)


def test_hub_stale_timeout_of_twice_the_heartbeat_interval_is_allowed(tmp_path: Path) -> None:
    text = "[hub]\nheartbeat_interval = 0.25\nstale_timeout = 0.5\n"
    config = load_hub_config(write(tmp_path, text), environ=ENV)
    assert (config.hub.heartbeat_interval, config.hub.stale_timeout) == (0.25, 0.5)


def test_hub_secret_from_file_or_environment(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("\n from-file \n")
    (tmp_path / "s").chmod(0o600)
    path = write(tmp_path, "[hub]\nsecret_file = \"s\"\n")
    assert load_hub_config(path, environ={}).hub.secret == b"from-file"
    assert load_hub_config(path, environ=ENV).hub.secret == b"hub-env-secret"
    (tmp_path / "s").unlink()
    with pytest.raises(ConfigError, match=r"hub.secret_file: .*does not exist.*RELAY_HUB_SECRET"):
        load_hub_config(path, environ={})


def test_forwarded_headers_drop_hop_by_hop_and_add_relay_headers() -> None:
    envelope = pb.WebhookEnvelope(id="w1", attempt=3, headers={
        "connection": "keep-alive", "keep-alive": "5", "transfer-encoding": "chunked",
        "te": "trailers", "upgrade": "h2c", "proxy-authorization": "x", "host": "edge",
        "content-length": "9", "x-hub-signature-256": "sha256=1", "stripe-signature": "t=1",
        "content-type": "application/json"})
    assert sorted(forwarded_headers(envelope)) == sorted([
        (b"x-hub-signature-256", b"sha256=1"), (b"stripe-signature", b"t=1"),
        (b"content-type", b"application/json"), (b"x-relay-webhook-id", b"w1"),
        (b"x-relay-attempt", b"3")])


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, (True, False)), (204, (True, False)), (299, (True, False)), (408, (False, False)),
     (429, (False, False)), (500, (False, False)), (503, (False, False)),
     (400, (False, True)), (404, (False, True)), (410, (False, True)), (301, (False, True)),
     (405, (False, True)), (501, (False, True))],
)
def test_classify(status: int, expected: tuple[bool, bool]) -> None:
    assert classify(status) == expected


def test_405_and_501_are_permanent_a_retry_would_get_the_same_answer() -> None:
    assert classify(405) == (False, True)  # Method Not Allowed
    assert classify(501) == (False, True)  # Not Implemented
    assert classify(502) == classify(504) == (False, False)


@pytest.mark.parametrize(
    ("destination", "path", "query", "target"),
    [
        # nothing received after /h/{endpoint_id}: the destination as configured (httpx's)
        ("http://d/hook", "", "", None),
        ("http://d/hook/", "", "", None),
        # exactly one "/" between the destination's path and the webhook's
        ("http://d/hook", "/a/b", "", b"/hook/a/b"),
        ("http://d/hook/", "/a/b", "", b"/hook/a/b"),
        ("http://d", "/a", "", b"/a"),
        ("http://d/", "/", "", b"/"),
        ("http://d/hook", "/", "", b"/hook/"),
        ("http://d/hook", "//x", "", b"/hook//x"),
        # a query alone; percent-encoding, "+" and a bare key kept byte for byte
        ("http://d/hook", "", "x=1%202&y", b"/hook?x=1%202&y"),
        ("http://d/hook/", "", "x=1", b"/hook/?x=1"),
        ("http://d/hook", "/a%2Fb/c%20d+e", "q=a+b%2F&&z=", b"/hook/a%2Fb/c%20d+e?q=a+b%2F&&z="),
        # the destination's own query comes first; its bare "?" is kept
        ("http://d/hook?key=1", "/a", "x=2", b"/hook/a?key=1&x=2"),
        ("http://d/hook?key=1", "/a", "", b"/hook/a?key=1"),
        ("http://d/hook?", "/a", "", b"/hook/a?"),
        ("http://d/hook?", "", "x=2", b"/hook?x=2"),
    ],
)
def test_request_target_joins_destination_and_webhook_path_and_query(
        destination: str, path: str, query: str, target: bytes | None) -> None:
    assert request_target(httpx.URL(destination), path, query) == target


def test_forwarded_for_is_added_only_when_enabled_and_appended_to_one_it_carries() -> None:
    plain = pb.WebhookEnvelope(id="w1", attempt=1, remote_addr="198.51.100.7",
                               headers={"content-type": "text/plain"})
    proxied = pb.WebhookEnvelope(id="w2", attempt=1, remote_addr="10.0.0.2", headers={
        "x-forwarded-for": "203.0.113.9, 192.0.2.1", "content-type": "text/plain"})
    old_edge = pb.WebhookEnvelope(id="w3", attempt=1, headers={"content-type": "text/plain"})

    def xff(envelope: pb.WebhookEnvelope, on: bool) -> list[bytes]:
        return [v for k, v in forwarded_headers(envelope, add_forwarded_for=on)
                if k == b"x-forwarded-for"]

    assert xff(plain, False) == [] and xff(plain, True) == [b"198.51.100.7"]
    assert xff(proxied, False) == [b"203.0.113.9, 192.0.2.1"]
    assert xff(proxied, True) == [b"203.0.113.9, 192.0.2.1, 10.0.0.2"]
    assert xff(old_edge, True) == []  # an older edge does not say who sent it


def test_backoff_is_full_jitter_doubling_to_the_cap_and_resets() -> None:
    class Top:
        def uniform(self, low: float, high: float) -> float:
            return high  # the ceiling of each draw

    backoff = Backoff(1, 60, rng=Top())  # type: ignore[arg-type]
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert backoff.next_delay() == 1
