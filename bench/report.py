"""What a benchmark run found: the figures, the targets judged against them, and the
report written as Markdown and a latency chart."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import LoadResult

BARE_FASTAPI = "B: bare FastAPI (uvicorn)"
LIVE = "Shipshape /live (gunicorn + middleware)"
ITEMS_COLD = "Shipshape items ?limit=50, Postgres, cache cold"
ITEMS_WARM = "Shipshape items ?limit=50, Postgres, cache warm"


@dataclass
class Report:
    quick: bool
    http: dict[str, LoadResult] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    targets: list[tuple[str, str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, name: str, figure: str, met: bool | None) -> None:
        self.targets.append((name, figure, met))


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def judge(report: Report) -> None:
    """The load targets, each as a ratio to bare FastAPI measured in the same run."""
    http = report.http
    b, live = http.get(BARE_FASTAPI), http.get(LIVE)
    cold, warm = http.get(ITEMS_COLD), http.get(ITEMS_WARM)
    if b and live:
        ratio = live.rps / b.rps
        report.target("/live ≥ 85 % of baseline B's req/s", f"{ratio:.0%}", ratio >= 0.85)
        p99 = live.p99_ms / b.p99_ms
        report.target("/live p99 ≤ 2 × B's p99", f"{p99:.2f} ×", p99 <= 2)
    for label, items, share in (("cache cold", cold, 8), ("cache warm", warm, 3)):
        if b and items:
            report.target(
                f"items page (Postgres, {label}) ≥ 1/{share} of B's req/s",
                f"1/{b.rps / items.rps:.1f}",
                items.rps * share >= b.rps,
            )
    shipshape = {name: r for name, r in http.items() if name.startswith("Shipshape")}
    if shipshape:
        errors = sum(r.errors for r in shipshape.values())
        report.target("0 socket errors in every Shipshape load run", str(errors), errors == 0)
    if cold and warm:
        ratio = warm.rps / cold.rps
        report.target("warm-cache items ≥ 3 × cold req/s", f"{ratio:.2f} ×", ratio >= 3)
    rss = [
        float(value.split()[0])
        for name, value in report.facts.items()
        if name.startswith("RSS per worker under load")
    ]
    if rss:
        report.target("≤ 90 MB RSS per worker under load", f"{max(rss):.0f} MB", max(rss) <= 90)


def _met(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "not measured"}[met]


def render(report: Report) -> str:
    b = report.http.get(BARE_FASTAPI)
    tool = next(iter(report.http.values())).tool if report.http else "n/a"
    lines = [
        f"# Shipshape benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}, load generator: {tool}"
        f"{' (quick run)' if report.quick else ''}.",
        "",
        "| Server | req/s | × B | p50 ms | p99 ms | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report.http.items():
        ratio = f"{r.rps / b.rps:.2f}" if b else ""
        lines.append(
            f"| {name} | {r.rps:,.0f} | {ratio} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.requests:,} | {r.errors} |"
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
    names = list(report.http)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [report.http[n].p50_ms for n in names], height=0.4, label="p50")
    ax.barh([i - 0.2 for i in y], [report.http[n].p99_ms for n in names], height=0.4, label="p99")
    ax.set_yticks(list(y), names)
    ax.set_xlabel("latency (ms)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
