"""relayd's benchmark suite: every machine-dependent figure next to a same-run baseline.

``scripts/bench [NAME ...]`` (or ``python -m bench.run [NAME ...] [--smoke] [--only NAME
...] [--out FILE]``; names alone are the same as ``--only``) runs the scenarios below with
relayd, hubs and helpers as separate processes, prints a table and writes
``bench/results.json``. ``--smoke`` runs every scenario tiny (CI).

| scenario | measured | baseline in the same run |
|---|---|---|
| ceiling | raw purerpc bidi loop, 1 KiB messages, each acked | (is the baseline) |
| relay | pending webhooks delivered and acked in the DB per second | ceiling |
| relay | the same at relayd's default log level (INFO) | relay at WARNING |
| latency | POST start to the hub receiving it, p50 / p99 | seed behaviour: 1 s poll |
| wan | drain of one endpoint through a 25 ms-each-way proxy | window 1 (extrapolated) |
| full | through relay-hub to an HTTP destination: webhooks/s, CPU share | relay (bench hub) |
| ingress | wrk, 1 KiB POSTs, 32 connections, every 202 committed | hello-world app, same stack |
| memory | relayd peak RSS dispatching with many pending rows | (target: 100 MB) |
| live | open-loop POSTs via relayd + relay-hub: latency, req/s, CPU | direct; bench hub |
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
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
    fill_pending,
    free_port,
    peak_rss_mb,
    percentile,
    start,
    start_relayd,
    stop,
    wait_port,
    wait_status,
    write_edge_config,
)
from bench.live import KEPT_UP_SHARE, LAG_TOLERANCE_NS, LiveResult, LiveTarget, open_target

PY = str(BIN / "python")


@dataclass(frozen=True)
class Sizes:
    ceiling: int
    relay: int
    latency_rate: int
    latency_seconds: float
    wan: int
    wan_sample: int
    full: int
    ingress_seconds: int
    memory_rows: int
    memory_seconds: float
    live_rates: tuple[int, int, int]  # low (1 connection), middle and high (live_connections)
    live_connections: int
    live_seconds: float  # each load
    live_warmup: float  # before each load, the same load, unmeasured
    live_idle: float


FULL = Sizes(ceiling=20_000, relay=20_000, latency_rate=200, latency_seconds=20, wan=10_000,
             wan_sample=200, full=10_000, ingress_seconds=10, memory_rows=1_000_000,
             memory_seconds=10, live_rates=(200, 1_000, 2_000), live_connections=8,
             live_seconds=10, live_warmup=1, live_idle=5)
SMOKE = Sizes(ceiling=300, relay=300, latency_rate=50, latency_seconds=1, wan=300,
              wan_sample=20, full=200, ingress_seconds=1, memory_rows=3_000, memory_seconds=1,
              live_rates=(50, 100, 200), live_connections=8, live_seconds=1, live_warmup=0.2,
              live_idle=0.5)


@dataclass
class Row:
    scenario: str
    what: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None

    @classmethod
    def against(cls, scenario: str, what: str, value: float, unit: str, baseline: float,
                baseline_what: str, target: str, met: bool | None) -> Row:
        """A row with its baseline; the ratio unless the baseline is 0 (e.g. no CPU tick)."""
        return cls(scenario, what, value, unit, baseline, baseline_what,
                   value / baseline if baseline else None, target, met)


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.rows: list[Row] = []
        self.notes: dict[str, Any] = {}
        self._helpers: list[trio.Process] = []  # e.g. the WAN proxy of the current run

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir()
        return path

    # -- ceiling and relay ------------------------------------------------------

    async def ceiling(self) -> float:
        folder = self.folder("ceiling")
        port, out = free_port(), folder / "result.json"
        server = await start([PY, str(BENCH / "ceiling.py"), "--port", str(port), "--count",
                              str(self.sizes.ceiling), "--out", str(out)], folder / "log")
        await wait_port(port)
        client = await start([PY, str(BENCH / "benchhub.py"), "--port", str(port)],
                             folder / "log")
        try:
            result = json.loads(await _wait_file(out, within=300))
        finally:
            await stop(client, server)
        return float(result["messages"] / result["seconds"])

    async def relay(self, name: str, endpoints: int, count: int, *, pipeline: bool,
                    hub_port: Callable[[Path], Awaitable[int]] | None = None,
                    until: int | None = None, log_level: str = "WARNING"
                    ) -> tuple[float, float]:
        """Drain ``count`` pending webhooks through the bench hub; (webhooks/s, seconds).

        ``until`` stops the clock after that many (a sample, for slow configurations).
        """
        folder = self.folder(name)
        ids = [f"e{i}" for i in range(endpoints)]
        config = write_edge_config(folder, ids)
        await fill_pending(folder / "relayd.db", ids, count)
        edge = await start_relayd(config, folder / "relayd.log", log_level)
        ports = edge_ports(config)
        extra: list[trio.Process] = []
        try:
            port = ports["grpc"] if hub_port is None else await hub_port(folder)
            launched = time.perf_counter()
            hub = await start([PY, str(BENCH / "benchhub.py"), "--port", str(port),
                               *(["--pipeline"] if pipeline else [])], folder / "hub.log")
            extra.append(hub)
            first = await wait_status(ports["admin"], lambda d: d["connected"], process=edge)
            t0, done0 = time.perf_counter(), first["queue"]["delivered"]
            target = until or count
            if done0 >= target:
                # all done before the first look (tiny runs): time from the hub's launch,
                # which includes its start-up and so understates the rate
                t0, done0 = launched, 0
            await wait_status(ports["admin"], lambda d: d["queue"]["delivered"] >= target,
                              process=edge)
            seconds = time.perf_counter() - t0
        finally:
            await stop(*extra, edge)
            for proc in self._helpers:
                await stop(proc)
            self._helpers.clear()
        return (target - done0) / seconds, seconds

    async def scenario_ceiling_and_relay(self) -> None:
        ceiling = await self.ceiling()
        self.rows.append(Row("ceiling", "purerpc bidi loop, 1 KiB, each acked", ceiling,
                             "msg/s", target="baseline"))
        n = self.sizes.relay
        for name, endpoints, pipeline in (("relay-16-endpoints", 16, True),
                                          ("relay-1-endpoint-pipelined", 1, True),
                                          ("relay-16-endpoints-window-1", 16, False)):
            rate, _ = await self.relay(name, endpoints, n, pipeline=pipeline)
            self.rows.append(Row(
                "relay", f"{n} pending, {endpoints} endpoint(s), "
                         f"{'pipelined' if pipeline else 'window 1 (comparison)'}",
                rate, "webhooks/s", ceiling, "ceiling", rate / ceiling,
                ">= 0.7 x ceiling" if pipeline else "", rate / ceiling >= 0.7 if pipeline
                else None))
            if name == "relay-16-endpoints":
                # Right after its WARNING twin: what the default log level costs (per
                # webhook lines are DEBUG; at INFO only connects, failures and summaries).
                info, _ = await self.relay(f"{name}-info", endpoints, n, pipeline=True,
                                           log_level="INFO")
                self.rows.append(Row(
                    "relay", f"{n} pending, {endpoints} endpoint(s), pipelined, "
                             "relayd at INFO (default log level)",
                    info, "webhooks/s", rate, "same at WARNING", info / rate,
                    ">= 0.95 x WARNING", info / rate >= 0.95))

    # -- latency ----------------------------------------------------------------

    async def latency(self, name: str, *, wake: bool) -> tuple[float, float]:
        folder = self.folder(name)
        config = write_edge_config(folder, ["lat"], wake_on_ingest=wake, poll_interval=1)
        edge = await start_relayd(config, folder / "relayd.log")
        ports = edge_ports(config)
        total = int(self.sizes.latency_rate * self.sizes.latency_seconds)
        out = folder / "latencies.json"
        hub = await start([PY, str(BENCH / "benchhub.py"), "--port", str(ports["grpc"]),
                           "--pipeline", "--latency-out", str(out), "--expect", str(total)],
                          folder / "hub.log")
        try:
            await wait_status(ports["admin"], lambda d: d["connected"], process=edge)
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
                url = f"http://127.0.0.1:{ports['ingress']}/h/lat"

                async def one() -> None:
                    response = await client.post(url, content=b"x" * 1024,
                                                 headers={"x-bench-t0": repr(time.time())})
                    assert response.status_code == 202

                start_at = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for i in range(total):
                        await trio.sleep_until(start_at + i / self.sizes.latency_rate)
                        nursery.start_soon(one)
            values = json.loads(await _wait_file(out, within=30))
        finally:
            await stop(hub, edge)
        return percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000

    async def scenario_latency(self) -> None:
        p50, p99 = await self.latency("latency", wake=True)
        seed50, seed99 = await self.latency("latency-seed-poll", wake=False)
        rate = self.sizes.latency_rate
        self.rows.append(Row("latency", f"p50, POST at {rate}/s", p50, "ms", seed50,
                             "seed: 1 s poll", p50 / seed50, "<= 5 ms", p50 <= 5))
        self.rows.append(Row("latency", f"p99, POST at {rate}/s", p99, "ms", seed99,
                             "seed: 1 s poll", p99 / seed99, "<= 25 ms", p99 <= 25))

    # -- WAN drain --------------------------------------------------------------

    async def _proxy(self, folder: Path) -> int:
        config_ports = edge_ports(folder / "relayd.toml")
        port = free_port()
        proxy = await start([PY, str(BENCH / "delayproxy.py"), "--listen", str(port),
                             "--target", str(config_ports["grpc"]), "--delay", "0.025"],
                            folder / "proxy.log")
        self._helpers.append(proxy)
        await wait_port(port)
        return port

    async def scenario_wan(self) -> None:
        n, sample = self.sizes.wan, self.sizes.wan_sample
        _, sample_seconds = await self.relay("wan-window-1", 1, n, pipeline=False,
                                             hub_port=self._proxy, until=sample)
        window1 = sample_seconds * n / sample
        _, pipelined = await self.relay("wan-pipelined", 1, n, pipeline=True,
                                        hub_port=self._proxy)
        self.rows.append(Row("wan", f"drain {n} on one endpoint, 25 ms each way, pipelined",
                             pipelined, "s", window1, f"window 1 ({sample} measured)",
                             pipelined / window1, "<= 3 s", pipelined <= 3))
        self.notes["wan_speedup"] = window1 / pipelined

    # -- full system ------------------------------------------------------------

    async def scenario_full(self) -> None:
        n = self.sizes.full
        folder = self.folder("full")
        dest_port = free_port()
        destination = await start([PY, str(BENCH / "asgi_apps.py"), "destination", "--port",
                                   str(dest_port)], folder / "destination.log")
        await wait_port(dest_port)
        config = write_edge_config(folder, ["full"],
                                   destination=f"http://127.0.0.1:{dest_port}")
        await fill_pending(folder / "relayd.db", ["full"], n)
        edge = await start_relayd(config, folder / "relayd.log")
        ports = edge_ports(config)
        (folder / "hub.toml").write_text(
            f'[hub]\nedge_url = "http://127.0.0.1:{ports["grpc"]}"\nsecret_file = "hub.secret"\n')
        launched = time.perf_counter()
        hub = await start([str(BIN / "relay-hub"), "--config", str(folder / "hub.toml"),
                           "--log-level", "WARNING"], folder / "hub.log")
        try:
            first = await wait_status(ports["admin"], lambda d: d["connected"], process=edge)
            t0, done0 = time.perf_counter(), first["queue"]["delivered"]
            if done0 >= n:  # all done before the first look (tiny runs): from the launch
                t0, done0 = launched, 0
            await wait_status(ports["admin"], lambda d: d["queue"]["delivered"] >= n,
                              process=edge)
            seconds = time.perf_counter() - t0
            # whole-process CPU (start-up included: small next to a full run)
            procs = {"relayd": edge, "relay-hub": hub, "destination": destination}
            cpu = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        finally:
            await stop(hub, edge, destination)
        rate = (n - done0) / seconds
        relay_rate = next((r.value for r in self.rows if r.what.startswith(
            f"{self.sizes.relay} pending, 1 endpoint(s), pipelined")), None)
        share = cpu["relay-hub"] / max(sum(cpu.values()), 1e-9)
        self.rows.append(Row("full", f"{n} on one endpoint via relay-hub to HTTP 200", rate,
                             "webhooks/s", relay_rate, "relay, bench hub, 1 endpoint",
                             rate / relay_rate if relay_rate else None, "report"))
        self.rows.append(Row("full", "relay-hub share of CPU (relayd+hub+destination)",
                             share * 100, "%", target="report"))
        self.notes["full_cpu_seconds"] = {k: round(v, 2) for k, v in cpu.items()}

    # -- ingress ----------------------------------------------------------------

    async def wrk(self, url: str, folder: Path) -> tuple[float, int, int]:
        script = folder / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\n'
                          'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        result = await trio.run_process(
            ["wrk", "-t2", "-c32", f"-d{self.sizes.ingress_seconds}s", "-s", str(script), url],
            capture_stdout=True)
        text = result.stdout.decode()
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
        done = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        return rate, done, int(bad.group(1)) if bad else 0

    async def scenario_ingress(self) -> None:
        if shutil.which("wrk") is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        folder = self.folder("ingress")
        config = write_edge_config(folder, ["in"])
        edge = await start_relayd(config, folder / "relayd.log")
        ports = edge_ports(config)
        try:
            rate, done, bad = await self.wrk(f"http://127.0.0.1:{ports['ingress']}/h/in", folder)
            doc = await wait_status(ports["admin"], lambda d: True)
        finally:
            await stop(edge)
        committed = doc["queue"]["pending"]
        hello_port = free_port()
        hello = await start([PY, str(BENCH / "asgi_apps.py"), "hello", "--port",
                             str(hello_port)], folder / "hello.log")
        try:
            await wait_port(hello_port)
            hello_rate, _, _ = await self.wrk(f"http://127.0.0.1:{hello_port}/h/in", folder)
        finally:
            await stop(hello)
        self.rows.append(Row("ingress", "wrk POST 1 KiB, 32 conns, 202 after commit", rate,
                             "req/s", hello_rate, "hello-world, same stack", rate / hello_rate,
                             ">= 0.7 x hello-world", rate / hello_rate >= 0.7))
        self.notes["ingress"] = {"completed": done, "non_2xx": bad, "rows_committed": committed,
                                 "every_202_committed": bad == 0 and committed >= done}

    # -- memory -----------------------------------------------------------------

    async def scenario_memory(self) -> None:
        rows = self.sizes.memory_rows
        folder = self.folder("memory")
        ids = [f"m{i}" for i in range(16)]
        config = write_edge_config(folder, ids)
        await fill_pending(folder / "relayd.db", ids, rows, body=b"y" * 100)
        edge = await start_relayd(config, folder / "relayd.log")
        ports = edge_ports(config)
        hub = await start([PY, str(BENCH / "benchhub.py"), "--port", str(ports["grpc"]),
                           "--pipeline"], folder / "hub.log")
        try:
            await wait_status(ports["admin"], lambda d: d["connected"], process=edge)
            await trio.sleep(self.sizes.memory_seconds)  # dispatch for a while, then read
            peak = peak_rss_mb(edge.pid)
            doc = await wait_status(ports["admin"], lambda d: True)
        finally:
            await stop(hub, edge)
        self.rows.append(Row("memory", f"relayd peak RSS, {rows:,} pending, dispatching",
                             peak, "MB", target="<= 100 MB", met=peak <= 100))
        self.notes["memory_delivered_during_run"] = doc["queue"]["delivered"]


    # -- live traffic -----------------------------------------------------------

    async def scenario_live(self) -> None:
        """Open-loop POSTs into relayd + relay-hub (`bench/live.py`), each load right after
        the same load straight at the destination (and, at the low rate, at relayd with a
        bench hub): the three targets run side by side, loads take turns. A latency or CPU
        target is met only by a load that was kept up (one that was not has figures of
        what got through; its CPU per webhook falls as batches grow)."""
        low, middle, high = self.sizes.live_rates
        conns, idle_seconds = self.sizes.live_connections, self.sizes.live_idle
        root = self.workdir / "live"
        results: dict[str, LiveResult] = {}

        async def load(live: LiveTarget, rate: float, connections: int) -> LiveResult:
            result = await live.load(rate=rate, connections=connections,
                                     seconds=self.sizes.live_seconds,
                                     warmup_seconds=self.sizes.live_warmup)
            name = f"{live.target} {f'{rate:g}/s' if rate else 'back to back'} x{connections}"
            results[name] = result
            return result

        async with open_target(root / "direct", "direct") as direct, \
                open_target(root / "edge", "edge") as edge, \
                open_target(root / "system", "system") as system:
            base_low, edge_low, low_run = (await load(direct, low, 1), await load(edge, low, 1),
                                           await load(system, low, 1))
            idle = await system.idle(idle_seconds)
            base_mid, mid_run = await load(direct, middle, conns), await load(system, middle,
                                                                              conns)
            base_high, high_run = await load(direct, high, conns), await load(system, high,
                                                                              conns)
            base_b2b, b2b_run = await load(direct, 0, 1), await load(system, 0, 1)

        dest = "direct to the destination"
        rows = [
            Row.against("live", "back to back, 1 connection: POST -> 202",
                        b2b_run.achieved_rate, "req/s", base_b2b.achieved_rate, dest,
                        ">= 1,500 req/s", b2b_run.achieved_rate >= 1_500),
        ]
        at = f"{low:,}/s, 1 connection"
        rows += [
            Row.against("live", f"{at}: POST -> 202 p50", low_run.answer_p50_ms, "ms",
                        base_low.answer_p50_ms, dest, "<= 0.8 ms",
                        low_run.kept_up and low_run.answer_p50_ms <= 0.8),
            *_arrival_rows(at, low_run, base_low, p50=None, p99=None),
            Row.against("live", f"{at}: relayd CPU per webhook",
                        low_run.cpu_ms_per_webhook["relayd"], "ms",
                        edge_low.cpu_ms_per_webhook["relayd"], "relayd, bench hub acking",
                        "<= 0.4 ms",
                        low_run.kept_up and low_run.cpu_ms_per_webhook["relayd"] <= 0.4),
            Row.against("live", f"{at}: relay-hub CPU per webhook",
                        low_run.cpu_ms_per_webhook["relay-hub"], "ms",
                        edge_low.helper_cpu_ms_per_webhook["bench-hub"],
                        "bench hub: acks, no HTTP", "<= 0.4 ms",
                        low_run.kept_up and low_run.cpu_ms_per_webhook["relay-hub"] <= 0.4),
        ]
        at = f"{middle:,}/s, {conns} connections"
        both, both_low = _daemons_cpu(mid_run), _daemons_cpu(low_run)
        rows += [
            *_arrival_rows(at, mid_run, base_mid, p50=3, p99=20),
            Row.against("live", f"{at}: relayd + relay-hub CPU per webhook", both, "ms",
                        both_low, f"same at {low:,}/s, 1 connection", "<= 0.6 ms",
                        mid_run.kept_up and both <= 0.6),
        ]
        at = f"{high:,}/s, {conns} connections"
        rows += [
            Row.against("live", f"{at}: answered per second", high_run.achieved_rate,
                        "req/s", base_high.achieved_rate, dest,
                        f"kept up (>= {KEPT_UP_SHARE:g} x rate)", high_run.kept_up),
            *_arrival_rows(at, high_run, base_high, p50=None, p99=50),
            Row("live", f"{at}, direct: sender late (> {LAG_TOLERANCE_NS // 1_000_000} ms "
                        "after schedule)", base_high.late_share * 100, "%",
                target="<= 1 % (sender keeps up)", met=base_high.late_share <= 0.01),
        ]
        idle_total = sum(idle.values())
        rows.append(Row("live", "idle, hub connected: relayd + relay-hub CPU", idle_total,
                        "% of a core", target="<= 0.5 %", met=idle_total <= 0.5))
        self.rows += rows
        self.notes["live"] = {name: {**asdict(r), "kept_up": r.kept_up}
                              for name, r in results.items()}
        self.notes["live_idle_cpu_percent"] = idle


def _daemons_cpu(result: LiveResult) -> float:
    return result.cpu_ms_per_webhook["relayd"] + result.cpu_ms_per_webhook["relay-hub"]


def _arrival_rows(at: str, run: LiveResult, base: LiveResult, *, p50: float | None,
                  p99: float | None) -> list[Row]:
    """POST -> destination p50 and p99 against the same load sent direct."""
    rows = []
    for name, limit, value, floor in (("p50", p50, run.arrival_p50_ms, base.arrival_p50_ms),
                                      ("p99", p99, run.arrival_p99_ms, base.arrival_p99_ms)):
        assert value is not None and floor is not None  # both at the destination
        rows.append(Row.against(
            "live", f"{at}: POST -> destination {name}", value, "ms", floor,
            "direct to the destination", "report" if limit is None else f"<= {limit:g} ms",
            None if limit is None else run.kept_up and value <= limit))
    return rows


async def _wait_file(path: Path, *, within: float) -> str:
    """The content of a result file another process writes when it is done."""
    apath = trio.Path(path)
    with trio.fail_after(within):
        while not await apath.exists():  # noqa: ASYNC110 - another process writes it
            await trio.sleep(0.05)
    return await apath.read_text()



SCENARIOS = {
    "relay": Bench.scenario_ceiling_and_relay,
    "latency": Bench.scenario_latency,
    "wan": Bench.scenario_wan,
    "full": Bench.scenario_full,
    "ingress": Bench.scenario_ingress,
    "memory": Bench.scenario_memory,
    "live": Bench.scenario_live,
}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def table(rows: list[Row]) -> str:
    lines = ["| scenario | measured | value | baseline (same run) | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        baseline = f"{r.baseline:,.1f} ({r.baseline_what})" if r.baseline is not None else ""
        ratio = f"{r.ratio:.3g}" if r.ratio is not None else ""
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.scenario} | {r.what} | {r.value:,.1f} {r.unit} | {baseline} | "
                     f"{ratio} | {r.target} | {met} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    sizes = SMOKE if args.smoke else FULL
    names = [*args.scenarios, *(args.only or [])] or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="relayd-bench-") as tmp:
        bench = Bench(sizes, Path(tmp))
        started = time.perf_counter()
        for name in names:
            t = time.perf_counter()
            await SCENARIOS[name](bench)
            print(f"bench: {name} done in {time.perf_counter() - t:.1f}s", flush=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": "smoke" if args.smoke else "full",
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [asdict(r) for r in bench.rows],
        "notes": bench.notes,
    }
    await trio.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(bench.rows))
    print(f"notes: {json.dumps(bench.notes)}")
    print(f"wrote {args.out} ({results['mode']}, {results['seconds']}s, "
          f"{results['machine']['cpu']}, {results['machine']['cores']} cores)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"the same as --only ({', '.join(SCENARIOS)})")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS))
    parser.add_argument("--out", default=str(BENCH / "results.json"))
    arguments = parser.parse_args()
    # not choices= on the positional: argparse checks an empty list against them (3.11)
    if unknown := sorted(set(arguments.scenarios) - set(SCENARIOS)):
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(SCENARIOS)}")
    raise SystemExit(trio.run(main, arguments))
