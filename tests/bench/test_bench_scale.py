"""The data-scale benchmark still runs: `python -m bench.scale --smoke` (1,000 and 100,000
rows). Its figures are judged by `make bench-scale` on a quiet machine, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.scale import REQUESTS
from tests.docker_utils import ROOT


def test_the_scale_benchmark_measures_every_request_at_both_sizes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--smoke", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "scale.md").read_text()
    assert table.startswith("| Request | 1,000 rows | 100,000 rows | 100,000 / 1,000 |")
    for name in REQUESTS:
        [row] = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert [cell[-3:] for cell in cells[1:3]] == [" ms", " ms"], row
        assert float(cells[3]) > 0, row
    assert "| import | " in table
    assert "| export | " in table
    assert "Largest ratio of a request's median latency" in table
