"""A tiny run of the benchmark suite, so the benchmark code keeps working (CI)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]


async def test_benchmark_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    scenarios = ["relay", "latency", "wan", "full", "memory", "live"]
    # wrk is a Debian package: .ci/run installs it; without it the ingress row is not run.
    if shutil.which("wrk"):
        scenarios.append("ingress")
    result = await trio.run_process(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--only", *scenarios],
        cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "smoke" and doc["machine"]["cores"] >= 1
    rows = {(r["scenario"], r["what"]): r for r in doc["rows"]}
    seen = {scenario for scenario, _ in rows}
    assert seen == {"ceiling", *scenarios}
    for row in rows.values():
        # a live share or idle CPU may well be 0 (a few /proc ticks in a smoke run)
        assert row["value"] > 0 or (row["scenario"] == "live" and row["value"] == 0), row
        if row["baseline"]:
            assert row["ratio"] == row["value"] / row["baseline"]
    assert "| scenario | measured |" in result.stdout.decode()
    assert_live_sane(doc)


def assert_live_sane(doc: dict[str, Any]) -> None:
    """Every live load: all answered 2xx; through relayd + relay-hub, all arrived."""
    rows = [r for r in doc["rows"] if r["scenario"] == "live"]
    assert len(rows) == 14 and all(r["met"] is not None or r["target"] == "report"
                                   for r in rows), rows
    loads = doc["notes"]["live"]
    assert {name.split()[0] for name in loads} == {"direct", "edge", "system"}
    assert len(loads) == 9
    for name, load in loads.items():
        assert load["sent"] > 0 and load["non_2xx"] == 0 and load["abandoned"] == 0, name
        if load["target"] in ("system", "direct"):
            assert load["arrived"] == load["accepted"], name
            assert load["arrival_p50_ms"] > 0, name
        if load["target"] == "system":
            assert load["cpu_ms_per_webhook"].keys() == {"relayd", "relay-hub"}, name
