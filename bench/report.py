"""What a benchmark run found: the figures, the targets judged against them, and the
report written as Markdown and a latency chart.

Load figures come in rounds: every server is loaded once per round, the servers taking
turns, and each server's figure is compared with the baseline's of the same round. A
target is judged on the median of those per-round ratios, and the report shows their
spread: a busy neighbour that slows one round moves one ratio, not the verdict.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import LoadResult

BARE_FASTAPI = "B: bare FastAPI (uvicorn)"
LIVE = "Shipshape /live"
ITEMS_COLD = "Shipshape items page, not cached (a cursor page of 10,000)"
ITEMS_WARM = "Shipshape items first page, cached"


@dataclass
class Report:
    quick: bool
    rounds: list[dict[str, LoadResult]] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    targets: list[tuple[str, str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, name: str, figure: str, met: bool | None) -> None:
        self.targets.append((name, figure, met))

    def add(self, round_: int, name: str, result: LoadResult) -> None:
        while len(self.rounds) <= round_:
            self.rounds.append({})
        self.rounds[round_][name] = result

    def servers(self) -> list[str]:
        """Every server measured, in the order first measured."""
        return list(dict.fromkeys(name for round_ in self.rounds for name in round_))

    def runs(self, name: str) -> list[LoadResult]:
        return [round_[name] for round_ in self.rounds if name in round_]

    def ratios(
        self, name: str, base: str, value: Callable[[LoadResult], float] = lambda r: r.rps
    ) -> list[float]:
        """`name`'s figure over `base`'s, one per round that measured both."""
        return [
            value(round_[name]) / value(round_[base])
            for round_ in self.rounds
            if name in round_ and base in round_ and value(round_[base]) > 0
        ]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def spread(ratios: list[float], fmt: Callable[[float], str]) -> str:
    """The median, then the lowest and highest of the rounds: `0.91 (0.88-0.95, 5 rounds)` (an en dash)."""
    median = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{fmt(median)} (1 round)"
    return f"{fmt(median)} ({fmt(min(ratios))}–{fmt(max(ratios))}, {len(ratios)} rounds)"


def _share(ratio: float) -> str:
    return f"1/{1 / ratio:.1f}" if ratio > 0 else "0"


def judge(report: Report) -> None:
    """The load targets, each a median of per-round ratios to bare FastAPI."""
    if live := report.ratios(LIVE, BARE_FASTAPI):
        median = statistics.median(live)
        report.target(
            "/live ≥ 85 % of baseline B's req/s", spread(live, "{:.0%}".format), median >= 0.85
        )
        p99 = report.ratios(LIVE, BARE_FASTAPI, lambda r: r.p99_ms)
        report.target(
            "/live p99 ≤ 2 × B's p99",
            spread(p99, "{:.2f} ×".format),
            statistics.median(p99) <= 2,
        )
    for label, name, share in (("not cached", ITEMS_COLD, 8), ("cached", ITEMS_WARM, 3)):
        if ratios := report.ratios(name, BARE_FASTAPI):
            report.target(
                f"items page ({label}) ≥ 1/{share} of B's req/s",
                spread(ratios, _share),
                statistics.median(ratios) * share >= 1,
            )
    shipshape = [name for name in report.servers() if name.startswith("Shipshape")]
    shipshape_runs = [run for name in shipshape for run in report.runs(name)]
    if shipshape_runs:
        errors = sum(r.errors for r in shipshape_runs)
        report.target("0 socket errors in every Shipshape load run", str(errors), errors == 0)
    if warm_over_cold := report.ratios(ITEMS_WARM, ITEMS_COLD):
        report.target(
            "cached items page ≥ 3 × the uncached one's req/s",
            spread(warm_over_cold, "{:.2f} ×".format),
            statistics.median(warm_over_cold) >= 3,
        )


def _met(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "not measured"}[met]


def render(report: Report) -> str:
    tool = next((r.tool for round_ in report.rounds for r in round_.values()), "n/a")
    lines = [
        f"# Shipshape benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}, load generator: {tool}, "
        f"{len(report.rounds)} interleaved round(s){' (quick run)' if report.quick else ''}. "
        "Per server: medians over the rounds; × B is the median of the per-round ratios to B, "
        "with the lowest and highest round.",
        "",
        "| Server | req/s | × B (spread) | p50 ms | p99 ms | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in report.servers():
        runs = report.runs(name)
        ratios = report.ratios(name, BARE_FASTAPI)
        ratio = spread(ratios, "{:.2f}".format) if ratios else ""
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        requests, errors = sum(r.requests for r in runs), sum(r.errors for r in runs)
        lines.append(
            f"| {name} | {rps:,.0f} | {ratio} | {p50:.2f} | {p99:.2f} | {requests:,} | {errors} |"
        )
    lines += ["", "| Fact | Value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in report.facts.items()]
    lines += ["", "| Target | Figure | Met |", "|---|---|---|"]
    lines += [f"| {name} | {figure} | {_met(met)} |" for name, figure, met in report.targets]
    if report.notes:
        lines += ["", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n"


def chart(report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.notes.append("matplotlib not installed: no chart")
        return
    names = report.servers()
    p50 = [statistics.median(r.p50_ms for r in report.runs(n)) for n in names]
    p99 = [statistics.median(r.p99_ms for r in report.runs(n)) for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], p50, height=0.4, label="p50 (median of rounds)")
    ax.barh([i - 0.2 for i in y], p99, height=0.4, label="p99 (median of rounds)")
    ax.set_yticks(list(y), names)
    ax.set_xlabel("latency (ms)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
