"""Profile relayd with py-spy (GIL holder only) while it drains webhooks to the bench hub.

``python -m bench.profile_relay [--count 20000] [--endpoints 1]`` prints the functions
where relayd spends its time (own time, and time including callees), from py-spy samples.
Needs ``pip install py-spy`` (not a dependency of relayd).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
from pathlib import Path

import trio

from bench.common import (
    BENCH,
    BIN,
    edge_ports,
    fill_pending,
    start,
    start_relayd,
    stop,
    wait_status,
    write_edge_config,
)


def summarize(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "own time:"]
    lines += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("including callees:")
    lines += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(top * 2)]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    if shutil.which("py-spy", path=str(BIN)) is None and shutil.which("py-spy") is None:
        raise SystemExit("pip install py-spy first")
    with tempfile.TemporaryDirectory() as tmp_name:
        folder = Path(tmp_name)
        ids = [f"e{i}" for i in range(args.endpoints)]
        config = write_edge_config(folder, ids)
        await fill_pending(folder / "relayd.db", ids, args.count)
        edge = await start_relayd(config, folder / "relayd.log")
        ports = edge_ports(config)
        raw = folder / "profile.txt"
        spy = await start([shutil.which("py-spy", path=str(BIN)) or "py-spy", "record",
                           "--pid", str(edge.pid), "--rate", "250", "--format", "raw", "--gil",
                           "--output", str(raw)], folder / "spy.log")
        await trio.sleep(1)  # py-spy attaches
        hub = await start([str(BIN / "python"), str(BENCH / "benchhub.py"), "--port",
                           str(ports["grpc"]), "--pipeline"], folder / "hub.log")
        await wait_status(ports["admin"], lambda d: d["queue"]["delivered"] >= args.count,
                          process=edge)
        spy.send_signal(2)  # SIGINT: py-spy writes its output
        with trio.fail_after(30):
            await spy.wait()
        await stop(hub, edge)
        print(summarize(raw, args.top))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--endpoints", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    trio.run(main, parser.parse_args())
