"""A tiny run of the benchmark suite, so the benchmark code keeps working (CI)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]


async def test_benchmark_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    scenarios = ["relay", "latency", "wan", "full", "memory"]
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
        assert row["value"] > 0, row
        if row["baseline"] is not None:
            assert row["ratio"] == row["value"] / row["baseline"]
    assert "| scenario | measured |" in result.stdout.decode()
