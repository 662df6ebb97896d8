"""Live traffic: webhooks arriving one at a time, sent open-loop at a fixed rate.

`open_target` starts a target (what the POSTs go to); its ``load()`` sends one load (a
rate and a number of sender connections) and measures it, any number of times in a row;
`run_live` is one target with one load. The targets:

- ``system``: relayd + relay-hub delivering to `bench/destination.py` (the product);
- ``edge``: relayd alone with `bench/benchhub.py` acking at once (what relay-hub adds is
  the difference to ``system``);
- ``ingest``: relayd with no hub connected (the ingress and the commit alone);
- ``direct``: the same POSTs straight at the destination (what the load generator and
  the destination themselves cost: the floor of every figure).

`bench/loadgen.py` sends the POSTs; each load reports POST -> answer and POST -> arrival
at the destination (p50 / p99 / max, ms, from the *scheduled* send time), whether the
sender kept up, and CPU milliseconds per accepted webhook of relayd and relay-hub from
/proc (read just before the load and once all it brought is delivered, so start-up is not
counted; the helpers' own, loadgen's included, apart); ``idle()`` the CPU both burn while
a hub is connected and nothing arrives. ``warmup_seconds`` sends the same load first,
unmeasured. What is still unanswered ``LATE_GRACE_SECONDS`` after the schedule's end is
given up (``abandoned``; the load was not kept up).

``python -m bench.live [--target system] [--rate 200] [--connections 1] [--seconds 10]``
prints one run's figures (profiling aid; ``--profile`` samples the daemons with py-spy);
``scripts/bench live`` runs the grid of the benchmark suite (`bench/run.py`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
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
    wait_port,
    wait_status,
    write_edge_config,
)

PY = str(BIN / "python")
ENDPOINT = "live"
# A sender that could not write a request within this long of its scheduled time fell
# behind (the figure reported is the share of requests that did).
LAG_TOLERANCE_NS = 5_000_000
# How long after its last scheduled request a run gives up on what is still unanswered:
# a target that cannot keep up then ends its run a few seconds late, not minutes.
LATE_GRACE_SECONDS = 3.0
# Each load of a target numbers its requests from the next multiple of this (loadgen's
# numbers have 8 digits), so the destination's arrivals tell the loads apart.
BLOCK = 1_000_000
# Before measuring idle CPU: the hub's connection start-up is over.
IDLE_SETTLE_SECONDS = 1.0
# How long accepted webhooks may take to reach the destination (or the bench hub) after
# the load, before the run fails.
DRAIN_SECONDS = 120
# A run's achieved rate at least this share of the scheduled one: it kept up.
KEPT_UP_SHARE = 0.97


@dataclass
class LiveResult:
    target: str
    rate: float  # scheduled requests/s; 0: back to back on one connection
    connections: int
    sent: int  # scheduled (open loop) or sent (back to back), abandoned ones included
    accepted: int  # answered 2xx
    arrived: int | None  # of the accepted, how many the destination noted (system, direct)
    abandoned: int  # still unanswered LATE_GRACE_SECONDS after the schedule's end
    achieved_rate: float  # answered / (last answer - first scheduled)
    answer_p50_ms: float
    answer_p99_ms: float
    answer_max_ms: float
    arrival_p50_ms: float | None
    arrival_p99_ms: float | None
    arrival_max_ms: float | None
    late_share: float  # requests written more than LAG_TOLERANCE after their time, or never
    non_2xx: int  # answered with another status, or the connection closed (abandoned apart)
    cpu_ms_per_webhook: dict[str, float]  # per accepted webhook: relayd, relay-hub
    helper_cpu_ms_per_webhook: dict[str, float]  # loadgen, destination, bench-hub
    sender_nice: int  # the load generator's priority (see bench/loadgen.py)
    idle_cpu_percent: dict[str, float] | None = None

    @property
    def kept_up(self) -> bool:
        return not self.abandoned and (
            self.rate <= 0 or self.achieved_rate >= KEPT_UP_SHARE * self.rate)


def _ms(ns: float) -> float:
    return ns / 1e6



def _accepted_count(load: dict[str, Any]) -> int:
    return sum(1 for r in load["records"] if 200 <= r[4] < 300)


class LiveTarget:
    """A running target (`open_target`): loads one after another, each measured alone."""

    def __init__(self, folder: Path, target: str, dest_port: int,
                 procs: dict[str, trio.Process], helpers: dict[str, trio.Process],
                 admin_port: int | None, port: int, path: str) -> None:
        self.folder = folder
        self.target = target
        self.dest_port = dest_port
        self.procs = procs  # the daemons measured: relayd, relay-hub
        self.helpers = helpers  # the rest: destination, bench-hub
        self.admin_port = admin_port
        self.port = port
        self.path = path
        self._block = 0  # request numbers: each load takes the next BLOCK of them
        self._accepted = 0  # by relayd over every load so far

    async def idle(self, seconds: float) -> dict[str, float]:
        """CPU, % of one core, of each daemon over ``seconds`` with nothing arriving."""
        await trio.sleep(IDLE_SETTLE_SECONDS)
        before = {k: cpu_seconds(p.pid) for k, p in self.procs.items()}
        await trio.sleep(seconds)
        return {k: round(100 * (cpu_seconds(p.pid) - before[k]) / seconds, 3)
                for k, p in self.procs.items()}

    async def load(self, *, rate: float, connections: int, seconds: float,
                   size: int = 1024, warmup_seconds: float = 0.0,
                   profile: bool = False) -> LiveResult:
        """Send one load (after ``warmup_seconds`` of the same, unmeasured); its figures."""
        if warmup_seconds:
            await self._send(rate=rate, connections=connections, seconds=warmup_seconds,
                             size=size)
        watched = {**self.procs, **self.helpers}
        before = {k: cpu_seconds(p.pid) for k, p in watched.items()}
        spies = [await start([str(BIN / "py-spy"), "record", "--pid", str(p.pid), "--format",
                              "raw", "--rate", "1000", "--gil",
                              "--output", str(self.folder / f"{k}.prof"),
                              "--duration", str(int(seconds))],
                             self.folder / f"py-spy-{k}.log")
                 for k, p in self.procs.items()] if profile else []
        load = await self._send(rate=rate, connections=connections, seconds=seconds,
                                size=size)
        cpu = {k: cpu_seconds(p.pid) - before[k] for k, p in watched.items()}
        cpu["loadgen"] = load["cpu_seconds"]
        for spy in spies:
            await spy.wait()
        arrivals = await self._arrivals() if self.target in ("system", "direct") else None
        return summarise(self.target, load, arrivals,
                         {k: v for k, v in cpu.items() if k in self.procs},
                         {k: v for k, v in cpu.items() if k not in self.procs})

    async def _send(self, *, rate: float, connections: int, seconds: float,
                    size: int) -> dict[str, Any]:
        """One loadgen process; returns once what it got accepted is delivered."""
        out = self.folder / f"load-{self._block}.json"
        first, self._block = self._block * BLOCK, self._block + 1
        await trio.run_process([PY, str(BENCH / "loadgen.py"), "--port", str(self.port),
                                "--path", self.path, "--rate", str(rate),
                                "--seconds", str(seconds),
                                "--deadline", str(seconds + LATE_GRACE_SECONDS),
                                "--connections", str(connections), "--size", str(size),
                                "--first", str(first), "--out", str(out)])
        load: dict[str, Any] = json.loads(await trio.Path(out).read_text())
        self._accepted += _accepted_count(load)
        if self.target in ("system", "edge") and self.admin_port is not None:
            # every accepted webhook's whole cost is counted before the CPU is read
            await wait_status(self.admin_port,
                              lambda d: d["queue"]["delivered"] >= self._accepted,
                              within=DRAIN_SECONDS, process=self.procs["relayd"])
        return load

    async def _arrivals(self) -> dict[int, int]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.dest_port}/arrivals")
        return dict(response.json())


@asynccontextmanager
async def open_target(folder: Path, target: str, *,
                      edge_settings: dict[str, object] | None = None,
                      hub_log_level: str = "WARNING") -> AsyncIterator[LiveTarget]:
    """Start ``target`` (see the module docstring) in ``folder`` (created); stop it after."""
    await trio.Path(folder).mkdir(parents=True)
    dest_port = free_port()
    destination = await start([PY, str(BENCH / "destination.py"), "--port", str(dest_port),
                               "--out", str(folder / "arrivals.json")],
                              folder / "destination.log")
    procs: dict[str, trio.Process] = {}
    helpers = {"destination": destination}
    admin_port = None
    try:
        await wait_port(dest_port)
        if target == "direct":
            port, path = dest_port, f"/{ENDPOINT}"
        else:
            config = write_edge_config(folder, [ENDPOINT],
                                       destination=f"http://127.0.0.1:{dest_port}",
                                       **(edge_settings or {}))
            procs["relayd"] = await start_relayd(config, folder / "relayd.log")
            ports = edge_ports(config)
            port, path, admin_port = ports["ingress"], f"/h/{ENDPOINT}", ports["admin"]
            if target == "system":
                (folder / "hub.toml").write_text(
                    f'[hub]\nedge_url = "http://127.0.0.1:{ports["grpc"]}"\n'
                    'secret_file = "hub.secret"\n')
                procs["relay-hub"] = await start(
                    [str(BIN / "relay-hub"), "--config", str(folder / "hub.toml"),
                     "--log-level", hub_log_level], folder / "hub.log")
            elif target == "edge":
                helpers["bench-hub"] = await start(
                    [PY, str(BENCH / "benchhub.py"), "--port", str(ports["grpc"]),
                     "--pipeline", "--batch-acks"], folder / "hub.log")
            if target != "ingest":
                await wait_status(admin_port, lambda d: d["connected"],
                                  process=procs["relayd"], within=30)
        yield LiveTarget(folder, target, dest_port, procs, helpers, admin_port, port, path)
    finally:
        await stop(*procs.values(), *helpers.values())


async def run_live(folder: Path, *, target: str, rate: float, connections: int,
                   seconds: float, size: int = 1024, idle_seconds: float = 0.0,
                   warmup_seconds: float = 0.0,
                   edge_settings: dict[str, object] | None = None,
                   hub_log_level: str = "WARNING", profile: bool = False) -> LiveResult:
    """One target, one load in ``folder`` (created); see the module docstring.

    ``warmup_seconds``: first the same load for that long, not measured (first
    connections, caches, lazily built objects), and delivered before the measured load.
    """
    async with open_target(folder, target, edge_settings=edge_settings,
                           hub_log_level=hub_log_level) as live:
        idle = await live.idle(idle_seconds) if idle_seconds and live.procs else None
        result = await live.load(rate=rate, connections=connections, seconds=seconds,
                                 size=size, warmup_seconds=warmup_seconds, profile=profile)
    result.idle_cpu_percent = idle
    return result


def summarise(target: str, load: dict[str, Any], arrivals: dict[int, int] | None,
              cpu: dict[str, float], helper_cpu: dict[str, float]) -> LiveResult:
    records = load["records"]
    n = len(records)
    accepted = [r for r in records if 200 <= r[4] < 300]
    answered = [r for r in records if r[4] != 0]
    # abandoned requests count with the time they were given up: a lower bound
    answers = [r[3] - r[1] for r in records]
    first = min(r[1] for r in records)
    last = max((r[3] for r in answered), default=first)
    reached = [arrivals[r[0]] - r[1] for r in accepted if r[0] in arrivals] \
        if arrivals is not None else []
    per_webhook = 1000 / max(len(accepted), 1)
    return LiveResult(
        target=target, rate=load["rate"], connections=load["connections"], sent=n,
        accepted=len(accepted), arrived=len(reached) if arrivals is not None else None,
        abandoned=load["abandoned"],
        achieved_rate=len(answered) / max((last - first) / 1e9, 1e-9),
        answer_p50_ms=_ms(percentile(answers, 0.5)),
        answer_p99_ms=_ms(percentile(answers, 0.99)),
        answer_max_ms=_ms(max(answers)),
        arrival_p50_ms=_ms(percentile(reached, 0.5)) if reached else None,
        arrival_p99_ms=_ms(percentile(reached, 0.99)) if reached else None,
        arrival_max_ms=_ms(max(reached)) if reached else None,
        late_share=sum(1 for r in records
                       if r[2] == 0 or r[2] - r[1] > LAG_TOLERANCE_NS) / n,
        non_2xx=len(records) - len(accepted) - load["abandoned"],
        cpu_ms_per_webhook={k: round(v * per_webhook, 4) for k, v in cpu.items()},
        helper_cpu_ms_per_webhook={k: round(v * per_webhook, 4)
                                   for k, v in helper_cpu.items()},
        sender_nice=load["nice"],
    )


async def main(args: argparse.Namespace) -> None:
    folder = Path(args.folder or f"/tmp/relayd-live-{int(time.time())}")
    result = await run_live(folder, target=args.target, rate=args.rate,
                            connections=args.connections, seconds=args.seconds,
                            idle_seconds=args.idle, warmup_seconds=args.warmup,
                            profile=args.profile)
    print(json.dumps({**asdict(result), "kept_up": result.kept_up}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["system", "edge", "ingest", "direct"],
                        default="system")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=float, default=0.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--folder")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy (installed separately) samples the daemons during the load:"
                             " FOLDER/relayd.prof, FOLDER/relay-hub.prof (collapsed stacks)")
    trio.run(main, parser.parse_args())
