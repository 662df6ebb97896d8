"""Config loading: names, defaults, validation errors that name the key, the secret."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from relayd.edge.config import ConfigError, ListenAddress, load_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {"RELAYD_HUB_SECRET": "from-env"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relayd.toml"
    path.write_text(text)
    return path


def test_example_configs_load() -> None:
    config = load_config(ROOT / "conf" / "relayd.toml", environ=ENV)
    assert config.relay.grpc_listen == ListenAddress("0.0.0.0", 50051)
    assert config.relay.heartbeat_interval == 30 and config.relay.stale_timeout == 60
    assert config.relay.auth_window == 300 and config.relay.buffer_size == 1000
    assert config.ingress.max_body_bytes == 4194304
    assert config.admin.listen == ListenAddress("127.0.0.1", 8081)
    assert config.endpoints[0].id == "github"
    assert config.hub.secret == b"from-env"
    local = load_config(ROOT / "conf" / "relayd.local.toml", environ=ENV)
    assert local.store.path == ROOT / "conf" / "relayd.db"


def test_defaults_when_sections_are_missing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ=ENV)
    assert config.relay.pipeline_window == 256 and config.relay.retry_max == 3600
    assert config.relay.wake_on_ingest is True
    assert config.relay.max_age == 7 * 24 * 3600 and config.relay.connect_timeout == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[relay]\nheartbeat_intervall = 3\n", "relay.heartbeat_intervall: unknown key"),
        ("[relya]\n", "relya: unknown key"),
        ("[relay]\nstale_timeout = -1\n", "relay.stale_timeout: must be a positive number"),
        ("[relay]\nbuffer_size = 0\n", "relay.buffer_size: must be a positive integer"),
        ("[relay]\nbuffer_size = 1.5\n", "relay.buffer_size: must be a positive integer"),
        ("[relay]\nheartbeat_interval = 31\n",
         "relay.stale_timeout: must be at least 2 x relay.heartbeat_interval (60 < 2 x 31)"),
        ("[relay]\nstale_timeout = 59.5\n",
         "relay.stale_timeout: must be at least 2 x relay.heartbeat_interval (59.5 < 2 x 30)"),
        ("[ingress]\nlisten = \"8080\"\n", "ingress.listen: must be \"host:port\""),
        ("[ingress]\nlisten = \"h:70000\"\n", "ingress.listen: must be \"host:port\""),
        ("[[endpoints]]\nid = \"a b\"\ndestination_url = \"http://x\"\n", "endpoints[0].id"),
        ("[[endpoints]]\nid = \"a\"\ndestination_url = \"ftp://x\"\n",
         "endpoints[0].destination_url"),
        ("[[endpoints]]\nid = \"a\"\ndestination_url = \"http://x\"\nurl = 1\n",
         "endpoints[0].url: unknown key"),
        ("[[endpoints]]\nid = \"a\"\ndestination_url = \"http://x\"\n"
         "[[endpoints]]\nid = \"a\"\ndestination_url = \"http://y\"\n", "duplicate endpoint"),
        ("[relay\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text), environ=ENV)


def test_stale_timeout_of_twice_the_heartbeat_interval_is_allowed(tmp_path: Path) -> None:
    text = "[relay]\nheartbeat_interval = 0.25\nstale_timeout = 0.5\n"
    config = load_config(write(tmp_path, text), environ=ENV)
    assert (config.relay.heartbeat_interval, config.relay.stale_timeout) == (0.25, 0.5)


def test_port_zero_is_allowed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[relay]\ngrpc_listen = \"127.0.0.1:0\"\n"), environ=ENV)
    assert config.relay.grpc_listen.port == 0


def test_secret_from_file_is_stripped_and_env_overrides(tmp_path: Path) -> None:
    (tmp_path / "hub.secret").write_text("  file-secret\n")
    (tmp_path / "hub.secret").chmod(0o600)
    path = write(tmp_path, "[hub]\nsecret_file = \"hub.secret\"\n")
    assert load_config(path, environ={}).hub.secret == b"file-secret"
    assert load_config(path, environ=ENV).hub.secret == b"from-env"


def test_missing_or_empty_secret_names_where_it_looked(tmp_path: Path) -> None:
    path = write(tmp_path, "[hub]\nsecret_file = \"hub.secret\"\n")
    with pytest.raises(ConfigError, match=r"hub.secret_file: .*hub.secret does not exist.*"
                                          r"RELAYD_HUB_SECRET"):
        load_config(path, environ={})
    (tmp_path / "hub.secret").write_text("\n")
    (tmp_path / "hub.secret").chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        load_config(path, environ={})


def test_secret_file_readable_by_others_is_refused_naming_file_and_mode(tmp_path: Path) -> None:
    secret = tmp_path / "hub.secret"
    secret.write_text("s3cret\n")
    path = write(tmp_path, "[hub]\nsecret_file = \"hub.secret\"\n")
    for mode in (0o644, 0o604, 0o601):
        secret.chmod(mode)
        with pytest.raises(ConfigError, match=rf"hub.secret_file: .*hub.secret is accessible "
                                              rf"to other users \(mode 0{mode:o}\)") as info:
            load_config(path, environ={})
        assert "s3cret" not in str(info.value)
    secret.chmod(0o640)  # group-readable is fine: the daemon's group
    assert load_config(path, environ={}).hub.secret == b"s3cret"


def test_secret_is_not_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ={"RELAYD_HUB_SECRET": "topsecret"})
    assert "topsecret" not in repr(config)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ=ENV)


def test_environment_is_used_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYD_HUB_SECRET", "process-env")
    assert load_config(write(tmp_path, "")).hub.secret == b"process-env"
    assert os.environ["RELAYD_HUB_SECRET"] == "process-env"
