"""The benchmark harness still runs: `python -m bench.run --quick` (1 s load runs)."""

from __future__ import annotations

import subprocess
import sys

from tests.docker_utils import ROOT


def test_quick_benchmark_prints_the_table_and_writes_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| B: bare FastAPI (uvicorn) |" in result.stdout
    assert "Shipshape items ?limit=50, Postgres, cache warm" in result.stdout
    assert "| Target | Figure | Met |" in result.stdout
    latest = (tmp_path / "latest.md").read_text()
    assert latest.strip() == result.stdout.strip()
    assert (tmp_path / "latency.png").stat().st_size > 1000
