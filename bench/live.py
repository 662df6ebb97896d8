"""Live traffic: webhooks arriving one at a time, sent open-loop at a fixed rate.

One run = a target (what the POSTs go to), a rate and a number of sender connections:

- ``system``: relayd + relay-hub delivering to `bench/destination.py` (the product);
- ``edge``: relayd alone with `bench/benchhub.py` acking at once (what relay-hub adds is
  the difference to ``system``);
- ``ingest``: relayd with no hub connected (the ingress and the commit alone);
- ``direct``: the same POSTs straight at the destination (what the load generator and
  the destination themselves cost: the floor of every figure).

`bench/loadgen.py` sends the POSTs; each run reports POST -> answer and POST -> arrival
at the destination (p50 / p99 / max, ms, from the *scheduled* send time), whether the
sender kept up, and CPU seconds per webhook of relayd and relay-hub from /proc (read just
before and after the load, so start-up is not counted), plus, with ``idle_seconds``, the
CPU both burn while a hub is connected and nothing arrives.

``python -m bench.live [--target system] [--rate 200] [--connections 1] [--seconds 10]``
prints one run's figures (profiling aid; ``--profile`` samples the daemons with py-spy);
``scripts/bench live`` runs the full grid.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from bench.common import (
    BENCH,
    BIN,
    cpu_seconds,
    edge_ports,
    free_port,
    percentile,
    start,
    start_relayd,
    stop,
    wait_status,
    write_edge_config,
)

PY = str(BIN / "python")
ENDPOINT = "live"
# A sender that could not write a request within this long of its scheduled time fell
# behind (the figure reported is the share of requests that did).
LAG_TOLERANCE_NS = 5_000_000


@dataclass
class LiveResult:
    target: str
    rate: float  # scheduled requests/s; 0: back to back on one connection
    connections: int
    sent: int
    achieved_rate: float  # answered / (last answer - first scheduled)
    answer_p50_ms: float
    answer_p99_ms: float
    answer_max_ms: float
    arrival_p50_ms: float | None
    arrival_p99_ms: float | None
    arrival_max_ms: float | None
    late_share: float  # requests written more than LAG_TOLERANCE after their schedule
    non_2xx: int
    cpu_ms_per_webhook: dict[str, float]
    idle_cpu_percent: dict[str, float] | None = None

    @property
    def kept_up(self) -> bool:
        return self.rate <= 0 or self.achieved_rate >= 0.97 * self.rate


def _ms(ns: float) -> float:
    return ns / 1e6


async def _wait_port(port: int) -> None:
    with trio.fail_after(30):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return


async def _wait_file(path: Path, within: float) -> str:
    apath = trio.Path(path)
    with trio.fail_after(within):
        while not await apath.exists():  # noqa: ASYNC110 - another process writes it
            await trio.sleep(0.02)
        await trio.sleep(0.05)  # written whole (small files, one write)
    return await apath.read_text()


async def run_live(folder: Path, *, target: str, rate: float, connections: int,
                   seconds: float, size: int = 1024, idle_seconds: float = 0.0,
                   edge_settings: dict[str, object] | None = None,
                   hub_log_level: str = "WARNING", profile: bool = False) -> LiveResult:
    """One live run in ``folder`` (created); see the module docstring."""
    await trio.Path(folder).mkdir(parents=True)
    dest_port = free_port()
    arrivals_file = folder / "arrivals.json"
    destination = await start([PY, str(BENCH / "destination.py"), "--port", str(dest_port),
                               "--out", str(arrivals_file)], folder / "destination.log")
    procs: dict[str, trio.Process] = {}
    helpers = [destination]
    try:
        await _wait_port(dest_port)
        if target == "direct":
            port, path = dest_port, f"/{ENDPOINT}"
        else:
            config = write_edge_config(folder, [ENDPOINT],
                                       destination=f"http://127.0.0.1:{dest_port}",
                                       **(edge_settings or {}))
            procs["relayd"] = await start_relayd(config, folder / "relayd.log")
            ports = edge_ports(config)
            port, path = ports["ingress"], f"/h/{ENDPOINT}"
            if target == "system":
                (folder / "hub.toml").write_text(
                    f'[hub]\nedge_url = "http://127.0.0.1:{ports["grpc"]}"\n'
                    'secret_file = "hub.secret"\n')
                procs["relay-hub"] = await start(
                    [str(BIN / "relay-hub"), "--config", str(folder / "hub.toml"),
                     "--log-level", hub_log_level], folder / "hub.log")
            elif target == "edge":
                helpers.append(await start(
                    [PY, str(BENCH / "benchhub.py"), "--port", str(ports["grpc"]),
                     "--pipeline", "--batch-acks"], folder / "hub.log"))
            if target != "ingest":
                await wait_status(ports["admin"], lambda d: d["connected"],
                                  process=procs["relayd"], within=30)
        idle = None
        if idle_seconds and procs:
            await trio.sleep(1.0)  # let the connection's start-up settle
            before = {k: cpu_seconds(p.pid) for k, p in procs.items()}
            await trio.sleep(idle_seconds)
            idle = {k: round(100 * (cpu_seconds(p.pid) - before[k]) / idle_seconds, 3)
                    for k, p in procs.items()}
        out = folder / "load.json"
        before = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        spies = [await start([str(BIN / "py-spy"), "record", "--pid", str(p.pid), "--format",
                              "raw", "--rate", "1000", "--gil",
                              "--output", str(folder / f"{k}.prof"),
                              "--duration", str(int(seconds))], folder / f"py-spy-{k}.log")
                 for k, p in procs.items()] if profile else []
        await trio.run_process([PY, str(BENCH / "loadgen.py"), "--port", str(port),
                                "--path", path, "--rate", str(rate), "--seconds",
                                str(seconds), "--connections", str(connections),
                                "--size", str(size), "--out", str(out)])
        load = json.loads(out.read_text())
        records = load["records"]
        if target in ("system", "edge"):
            # what was accepted has reached the destination (or the bench hub) before the
            # CPU is read: every webhook's whole cost is counted
            want = sum(1 for r in records if 200 <= r[4] < 300)
            await wait_status(ports["admin"],
                              lambda d: d["queue"]["delivered"] >= want, within=120)
        cpu = {k: cpu_seconds(p.pid) - before[k] for k, p in procs.items()}
        for spy in spies:
            await spy.wait()
    finally:
        await stop(*procs.values(), *helpers)
    arrivals = dict(json.loads(await _wait_file(arrivals_file, 10))) \
        if target in ("system", "direct") else {}
    return summarise(target, load, arrivals, cpu, idle)


def summarise(target: str, load: dict, arrivals: dict[int, int],  # type: ignore[type-arg]
              cpu: dict[str, float], idle: dict[str, float] | None) -> LiveResult:
    records = load["records"]
    n = len(records)
    answers = [r[3] - r[1] for r in records]
    first = min(r[1] for r in records)
    last = max(r[3] for r in records)
    reached = [arrivals[r[0]] - r[1] for r in records if r[0] in arrivals]
    return LiveResult(
        target=target, rate=load["rate"], connections=load["connections"], sent=n,
        achieved_rate=n / max((last - first) / 1e9, 1e-9),
        answer_p50_ms=_ms(percentile(answers, 0.5)),
        answer_p99_ms=_ms(percentile(answers, 0.99)),
        answer_max_ms=_ms(max(answers)),
        arrival_p50_ms=_ms(percentile(reached, 0.5)) if reached else None,
        arrival_p99_ms=_ms(percentile(reached, 0.99)) if reached else None,
        arrival_max_ms=_ms(max(reached)) if reached else None,
        late_share=sum(1 for r in records if r[2] - r[1] > LAG_TOLERANCE_NS) / n,
        non_2xx=sum(1 for r in records if not 200 <= r[4] < 300),
        cpu_ms_per_webhook={k: round(1000 * v / n, 4) for k, v in cpu.items()},
        idle_cpu_percent=idle,
    )


async def main(args: argparse.Namespace) -> None:
    folder = Path(args.folder or f"/tmp/relayd-live-{int(time.time())}")
    result = await run_live(folder, target=args.target, rate=args.rate,
                            connections=args.connections, seconds=args.seconds,
                            idle_seconds=args.idle, profile=args.profile)
    print(json.dumps({**asdict(result), "kept_up": result.kept_up}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["system", "edge", "ingest", "direct"],
                        default="system")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=float, default=0.0)
    parser.add_argument("--folder")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy (installed separately) samples the daemons during the load:"
                             " FOLDER/relayd.prof, FOLDER/relay-hub.prof (collapsed stacks)")
    trio.run(main, parser.parse_args())
