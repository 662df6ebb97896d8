"""The committed generated modules match what proto/generate.py produces from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = sorted(path.name for path in tmp_path.iterdir())
    # the messages, their type stubs (relay_pb2.pyi, what mypy reads) and the purerpc stub
    assert fresh == ["relay_grpc.py", "relay_pb2.py", "relay_pb2.pyi"]
    for name in fresh:
        committed = ROOT / "relayd" / "wire" / name
        assert committed.exists() and (tmp_path / name).read_text() == committed.read_text(), (
            f"relayd/wire/{name} is stale: run `python proto/generate.py` and commit"
        )


def test_stream_method_path_is_the_contract() -> None:
    from relayd.wire import METHOD_NAME, SERVICE_NAME, pb

    assert f"/{SERVICE_NAME}/{METHOD_NAME}" == "/relay.v1.RelayService/Stream"
    assert pb.DESCRIPTOR.package == "relay.v1"
