"""Regenerate the protobuf and purerpc modules from ``proto/relay/v1/relay.proto``.

Usage: ``python proto/generate.py [--out DIR]`` (default: ``relayd/wire/``).
Needs the ``grpcio-tools`` test extra; nothing at run time imports it.

protoc names modules after the proto's package path (``relay.v1.relay_pb2``); the
generated stub is rewritten to import ``relayd.wire.relay_pb2`` instead, so the
generated code lives inside this package rather than as a top-level ``relay`` package.
protoc's ``--pyi_out`` also writes type stubs for the messages (``relay_pb2.pyi``), so mypy
checks the code that builds and reads them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["generate"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "relay/v1/relay.proto"
GENERATED = ("relay_pb2.py", "relay_pb2.pyi", "relay_grpc.py")
_IMPORT_FROM = "import relay.v1.relay_pb2 as"
_IMPORT_TO = "from relayd.wire import relay_pb2 as"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc with the purerpc plugin and write the modules and stubs into ``out_dir``."""
    plugin = shutil.which("protoc-gen-purerpc", path=str(Path(sys.executable).parent))
    if plugin is None:
        plugin = shutil.which("protoc-gen-purerpc")
    if plugin is None:
        raise SystemExit("protoc-gen-purerpc not found (it is installed with purerpc)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
                f"--python_out={tmp}", f"--pyi_out={tmp}", f"--purerpc_out={tmp}",
                f"--plugin=protoc-gen-purerpc={plugin}", str(PROTO_ROOT / PROTO_FILE),
            ],
            check=True,
        )
        written = []
        for name in GENERATED:
            text = (Path(tmp) / "relay" / "v1" / name).read_text()
            text = text.replace(_IMPORT_FROM, _IMPORT_TO)
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "relayd" / "wire")
    args = parser.parse_args()
    for path in generate(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
