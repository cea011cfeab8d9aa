"""The benchmark's Met column: each load target judged right at its bar."""

from __future__ import annotations

import pytest

from bench.load import LoadResult
from bench.report import BARE_FASTAPI, ITEMS_COLD, ITEMS_WARM, LIVE, Report, judge


def _run(rps: float, p99_ms: float = 10.0, errors: int = 0) -> LoadResult:
    return LoadResult(rps=rps, p50_ms=1.0, p99_ms=p99_ms, requests=1000, errors=errors, tool="wrk")


def _judged(**http: LoadResult) -> dict[str, bool | None]:
    """Met per target, by the first words of its name."""
    names = {"b": BARE_FASTAPI, "live": LIVE, "cold": ITEMS_COLD, "warm": ITEMS_WARM}
    report = Report(quick=False, http={names[key]: result for key, result in http.items()})
    judge(report)
    short = {
        "/live ≥": "live",
        "/live p99": "p99",
        "items page (Postgres, cache cold)": "cold",
        "items page (Postgres, cache warm)": "warm",
        "0 socket errors": "errors",
    }
    return {
        key: met
        for name, _figure, met in report.targets
        for prefix, key in short.items()
        if name.startswith(prefix)
    }


@pytest.mark.parametrize(
    ("live", "cold", "warm", "met"),
    [
        (850, 125, 1000 / 3, True),  # exactly on every bar: 85 %, 1/8, 1/3 of 1,000
        (849, 124.9, 333, False),  # just under each
    ],
)
def test_each_ratio_target_is_met_at_its_bar_and_not_below(
    live: float, cold: float, warm: float, met: bool
) -> None:
    judged = _judged(b=_run(1000), live=_run(live), cold=_run(cold), warm=_run(warm))
    assert {key: judged[key] for key in ("live", "cold", "warm")} == dict.fromkeys(
        ("live", "cold", "warm"), met
    )


def test_p99_and_socket_errors_are_judged() -> None:
    ok = _judged(b=_run(1000, p99_ms=10), live=_run(900, p99_ms=20), cold=_run(200))
    assert (ok["p99"], ok["errors"]) == (True, True)
    bad = _judged(b=_run(1000, p99_ms=10), live=_run(900, p99_ms=20.1), cold=_run(200, errors=1))
    assert (bad["p99"], bad["errors"]) == (False, False)
