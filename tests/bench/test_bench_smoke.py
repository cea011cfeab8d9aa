"""The benchmark harness still runs: `python -m bench.run --quick` (1 s load runs)."""

from __future__ import annotations

import subprocess
import sys

from bench.report import BARE_FASTAPI, ITEMS_COLD, ITEMS_WARM, LIVE
from tests.docker_utils import ROOT


def test_quick_benchmark_prints_the_table_and_writes_results(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for server in (BARE_FASTAPI, LIVE, ITEMS_WARM, ITEMS_COLD):  # each in both rounds
        [row] = [line for line in result.stdout.splitlines() if line.startswith(f"| {server} |")]
        assert "2 rounds)" in row, row
    assert "| Target | Figure | Met |" in result.stdout
    targets = result.stdout.split("| Target | Figure | Met |", 1)[1].split("\n\n", 1)[0]
    met = {
        row.split(" | ")[0].strip("| "): row.rsplit(" | ", 1)[1].strip(" |")
        for row in targets.strip().splitlines()[1:]
    }
    # Every load target is judged (its load runs happened; only the cold build is left out
    # of --quick), and no load run, however short, loses a connection: the one bar a 1 s
    # run can hold the service to.
    judged = {name.split(" ≥")[0].split(" ≤")[0]: value for name, value in met.items()}
    load = ["/live", "/live p99", "items page (not cached)", "items page (cached)"]
    load += ["0 socket errors in every Shipshape load run", "cached items page"]
    assert {name: judged.get(name) in ("met", "not met") for name in load} == dict.fromkeys(
        load, True
    ), met
    assert met["0 socket errors in every Shipshape load run"] == "met", met
    latest = (tmp_path / "latest.md").read_text()
    assert latest.strip() == result.stdout.strip()
    assert (tmp_path / "latency.png").stat().st_size > 1000
