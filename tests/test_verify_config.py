"""``[[endpoints]] verify``: the config keys, their errors (naming the key) and the secrets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from relayd.edge.config import VERIFY_SCHEMES, ConfigError, load_config, parse_config
from relayd.edge.verify import build_verifier
from tests.test_verify import GITHUB_BODY, GITHUB_SECRET, GITHUB_SIGNATURE

ENV = {"RELAYD_HUB_SECRET": "hub-secret"}
ENDPOINT = '[[endpoints]]\nid = "gh"\ndestination_url = "http://127.0.0.1:9/gh"\n'


def write(tmp_path: Path, endpoint_keys: str) -> Path:
    path = tmp_path / "relayd.toml"
    path.write_text(ENDPOINT + endpoint_keys)
    return path


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> None:
    path = tmp_path / "gh.secret"
    path.write_text(text)
    path.chmod(mode)


def test_secret_file_holds_several_secrets_and_each_is_accepted(tmp_path: Path) -> None:
    secret_file(tmp_path, f"  the-new-secret\n\n{GITHUB_SECRET}\n")
    config = load_config(write(tmp_path, 'verify = "github"\nsecret_file = "gh.secret"\n'),
                         environ=ENV)
    spec = config.endpoints[0].verify
    assert spec is not None and spec.scheme == "github"
    assert spec.keys == (b"the-new-secret", GITHUB_SECRET.encode())
    assert GITHUB_SECRET not in repr(config)
    verifier = build_verifier(spec)
    headers = [("x-hub-signature-256", GITHUB_SIGNATURE)]
    assert verifier.verify(headers, "", GITHUB_BODY, 0.0) is None


def test_secret_env_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'verify = "slack"\nsecret_env = "SLACK_SIGNING_SECRET"\n'
                           "tolerance = 120\n")
    config = load_config(path, environ={**ENV, "SLACK_SIGNING_SECRET": "abc\ndef\n"})
    spec = config.endpoints[0].verify
    assert spec is not None and spec.keys == (b"abc", b"def") and spec.tolerance == 120
    with pytest.raises(ConfigError, match=re.escape(
            "endpoints[0].secret_env: the environment variable SLACK_SIGNING_SECRET is not "
            "set or empty")):
        load_config(path, environ=ENV)


def test_no_verify_means_no_check(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ=ENV).endpoints[0].verify is None


def test_world_readable_secret_file_is_refused_without_showing_it(tmp_path: Path) -> None:
    secret_file(tmp_path, "s3cret-value\n", mode=0o644)
    path = write(tmp_path, 'verify = "github"\nsecret_file = "gh.secret"\n')
    with pytest.raises(ConfigError, match=re.escape("endpoints[0].secret_file: ")
                       + r".*gh.secret is accessible to other users \(mode 0644\)") as info:
        load_config(path, environ=ENV)
    assert "s3cret" not in str(info.value)


def test_missing_or_empty_secret_file_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'verify = "github"\nsecret_file = "gh.secret"\n')
    with pytest.raises(ConfigError, match=r"endpoints\[0\].secret_file: .*gh.secret does not "
                                          r"exist$"):
        load_config(path, environ=ENV)
    secret_file(tmp_path, "\n \n")
    with pytest.raises(ConfigError, match=r"endpoints\[0\].secret_file: .*gh.secret is empty$"):
        load_config(path, environ=ENV)


def test_relayctl_loads_the_config_without_reading_endpoint_secrets(tmp_path: Path) -> None:
    # relayctl runs as a user who cannot read the secrets (load_secret=False)
    path = write(tmp_path, 'verify = "github"\nsecret_file = "gh.secret"\n')
    spec = load_config(path, environ={}, load_secret=False).endpoints[0].verify
    assert spec is not None and spec.keys == ()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('verify = "gitlab"\nsecret_env = "S"\n',
         "endpoints[0].verify: unknown scheme 'gitlab' (known: github, hmac-sha256, slack, "
         "standard-webhooks, stripe, token)"),
        ("verify = 1\nsecret_env = \"S\"\n", "endpoints[0].verify: unknown scheme 1"),
        ("verify = []\nsecret_env = \"S\"\n", "endpoints[0].verify: unknown scheme []"),
        ('verify = "github"\n',
         "endpoints[0].secret_file: verify = 'github' needs one secret source: secret_file "
         "or secret_env (not both)"),
        ('verify = "github"\nsecret_file = "gh.secret"\nsecret_env = "S"\n',
         "endpoints[0].secret_env: verify = 'github' needs one secret source"),
        ('verify = "github"\nsecret_env = "not a name"\n',
         "endpoints[0].secret_env: must name an environment variable"),
        ('verify = "stripe"\nsecret_env = "S"\ntolerance = -5\n',
         "endpoints[0].tolerance: must be a positive number of seconds, got -5"),
        ('verify = "stripe"\nsecret_env = "S"\ntolerance = "300"\n',
         "endpoints[0].tolerance: must be a positive number of seconds, got '300'"),
        ('verify = "github"\nsecret_env = "S"\ntolerance = 300\n',
         "endpoints[0].tolerance: not used by verify = 'github' (it takes: secret_env, "
         "secret_file)"),
        ('secret_env = "S"\n', 'endpoints[0].secret_env: only used with verify = "<scheme>"'),
        ('verify = "github"\nsecret = "inline"\n', "endpoints[0].secret: unknown key"),
        ('verify = "hmac-sha256"\nsecret_env = "S"\n',
         "endpoints[0].header: verify = 'hmac-sha256' needs the header"),
        ('verify = "hmac-sha256"\nsecret_env = "S"\nheader = "X-Sig"\nencoding = "base32"\n',
         "endpoints[0].encoding: must be one of hex, base64, got 'base32'"),
        ('verify = "hmac-sha256"\nsecret_env = "S"\nheader = "X Sig"\n',
         "endpoints[0].header: not an HTTP header name: 'X Sig'"),
        ('verify = "token"\nsecret_env = "S"\n',
         "endpoints[0].header: verify = 'token' needs where the token is: header or query"),
        ('verify = "token"\nsecret_env = "S"\nheader = "X-Token"\nquery = "token"\n',
         "endpoints[0].header: verify = 'token' needs where the token is"),
        ('verify = "token"\nsecret_env = "S"\nquery = ""\n',
         "endpoints[0].query: must not be empty"),
    ],
)
def test_bad_verify_config_names_the_key(tmp_path: Path, keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, keys), environ={**ENV, "S": "secret"})


def test_a_standard_webhooks_secret_that_is_not_base64_is_refused_unshown(
        tmp_path: Path) -> None:
    path = write(tmp_path, 'verify = "standard-webhooks"\nsecret_env = "S"\n')
    with pytest.raises(ConfigError, match=re.escape(
            "endpoints[0].secret_env: secret 2 of 2 is not a standard-webhooks secret "
            "(whsec_ followed by base64)")) as info:
        load_config(path, environ={**ENV, "S": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
                                               "whsec_not*base64"})
    assert "not*base64" not in str(info.value)


def test_the_commented_examples_in_conf_are_valid() -> None:
    conf = (Path(__file__).resolve().parents[1] / "conf" / "relayd.toml").read_text()
    examples = conf[conf.index("# Sender verification"):]
    blocks: list[list[str]] = []
    for line in examples.splitlines():
        match = re.match(r"^# (\w+ = .*)$", line)
        if match and match.group(1).startswith("verify ="):
            blocks.append([])
        if match:
            blocks[-1].append(match.group(1))
    schemes = []
    for block in blocks:
        text = ENDPOINT + "\n".join(block) + "\n"
        raw = tomllib.loads('[hub]\nsecret_file = ""\n' + text)
        endpoint = parse_config(raw, environ=ENV, load_secret=False).endpoints[0]
        assert endpoint.verify is not None
        schemes.append(endpoint.verify.scheme)
    assert sorted(schemes) == sorted(VERIFY_SCHEMES)
