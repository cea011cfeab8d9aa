"""Shipshape benchmarks: speed, size and start time, as ratios against baselines measured
in the same run on the same machine (absolute figures on a shared machine are noise).

    python -m bench.run            # `make bench`: everything, about 7 minutes
    python -m bench.run --quick    # 1 s load runs, 2 rounds, no cold build (CI smoke test)

Prints a table and writes bench/results/latest.md and bench/results/latency.png. All load
goes to 127.0.0.1 only, every run bounded in time and in requests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.measure import (
    ROUNDS,
    measure_http,
    measure_image,
    measure_memory,
    measure_speed,
    measure_stack,
    measure_start,
)
from bench.report import Report, chart, judge, log, render
from tools.docker import ROOT, docker_available

RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s load runs, no cold build")
    parser.add_argument("--seconds", type=float, default=None, help="duration of each load run")
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"turns of every server (default {ROUNDS})"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where latest.md and latency.png go"
    )
    args = parser.parse_args(argv)
    results: Path = args.output
    seconds = args.seconds or (1.0 if args.quick else 8.0)
    rounds = max(1, args.rounds or (2 if args.quick else ROUNDS))
    report = Report(quick=args.quick)
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        steps: list[Callable[[], None]] = []
        if docker_available():
            steps += [
                lambda: measure_image(report, args.quick, tmp),  # builds what the rest runs
                lambda: measure_speed(report, seconds, rounds),
                lambda: measure_memory(report, seconds),
                lambda: measure_start(report),
            ]
            if not args.quick:
                steps.append(lambda: measure_stack(report, tmp))
        else:
            steps.append(lambda: measure_http(report, seconds, rounds, tmp))
            report.notes.append(
                "Docker unavailable: /live measured from this venv (development settings, "
                "SQLite); the items pages, the production image and start times not measured"
            )
        for step in steps:
            try:
                step()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                # One measurement failing (no network for the wheelhouse, a port taken)
                # leaves the others standing; the reason goes into the report.
                reason = getattr(exc, "stderr", None) or str(exc)
                report.notes.append(f"a measurement failed: {str(reason).strip()[-300:]}")
                log(f"failed: {str(reason).strip()[-300:]}")
    judge(report)
    chart(report, results / "latency.png")
    text = render(report)
    (results / "latest.md").write_text(text, encoding="utf-8")
    print(text)
    failed = sum(note.startswith("a measurement failed") for note in report.notes)
    if failed:
        log(f"{failed} measurement(s) failed: see the notes under the tables")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
