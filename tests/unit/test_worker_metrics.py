"""The worker's own metrics: task runs by outcome and duration, its /metrics (the app's
access rules), and the sample files of exited processes folded so that the directory of a
long-running server stays bounded without a total changing."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from app.core import metrics
from app.core.states import TaskOutcome
from app.worker import telemetry
from tests.helpers import make_settings

# A process that writes what a pool process of the worker writes, then exits (or waits).
WRITER = textwrap.dedent("""
    import sys
    from app.core import metrics
    for outcome in ("succeeded", "succeeded", "failed"):
        metrics.WORKER_TASKS.labels("shipshape.run_job", outcome).inc()
    metrics.WORKER_TASK_DURATION.labels("shipshape.run_job").observe(float(sys.argv[1]))
    metrics.JOBS_FINISHED.labels("import", "failed").inc()
    metrics.IN_PROGRESS.inc()  # a live gauge: counts only while this process lives
    metrics.BACKUP_SIZE.set(float(sys.argv[1]))  # a most-recent gauge
    if len(sys.argv) > 2:
        print("ready", flush=True)
        sys.stdin.readline()
""")


def _writer(directory: Path, seconds: float, wait: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    args = [sys.executable, "-c", WRITER, str(seconds), *(["wait"] if wait else [])]
    return subprocess.Popen(args, env=env, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)  # fmt: skip


def _samples(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect() for s in family.samples
    }  # fmt: skip


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_exited_processes_fold_into_archives_with_every_total_kept(tmp_path: Path) -> None:
    durations = [0.2, 3.0, 45.0, 0.04]
    for seconds in durations:
        assert _writer(tmp_path, seconds).wait(timeout=120) == 0
    live = _writer(tmp_path, 7.0, wait=True)
    try:
        assert live.stdout is not None
        assert live.stdout.readline().strip() == "ready"
        before = _samples(tmp_path)
        assert _value(before, "http_requests_in_progress") == 5  # the exited ones still count
        metrics.compact(str(tmp_path))
        after = _samples(tmp_path)

        files = sorted(p.name for p in tmp_path.glob("*.db"))
        mine = [name for name in files if name.endswith(f"_{live.pid}.db")]
        assert files == sorted([*mine, "counter_archive.db", "histogram_archive.db",
                                "gauge_mostrecent_archive.db"])  # fmt: skip
        assert len(mine) == 4  # counter, histogram, livesum and mostrecent gauge: untouched
        run_job = {"task": "shipshape.run_job"}
        assert _value(after, "worker_tasks_total", **run_job, outcome="succeeded") == 10
        assert _value(after, "worker_tasks_total", **run_job, outcome="failed") == 5
        assert _value(after, "jobs_finished_total", kind="import", state="failed") == 5
        assert _value(after, "worker_task_duration_seconds_count", **run_job) == 5
        assert _value(after, "worker_task_duration_seconds_sum", **run_job) == pytest.approx(
            sum(durations) + 7.0
        )
        for le, count in (
            ("0.05", 1),
            ("0.25", 2),
            ("5.0", 3),
            ("10.0", 4),
            ("60.0", 5),
            ("+Inf", 5),
        ):
            assert _value(after, "worker_task_duration_seconds_bucket", **run_job, le=le) == count
        assert _value(after, "http_requests_in_progress") == 1  # only the live process
        assert _value(after, "backup_size_bytes") == 7.0  # the newest value, the live one's
        unchanged = {k: v for k, v in before.items() if k[0] != "http_requests_in_progress"}
        # Sums of floats are added in file order, which the archive changes: equal to the ulp.
        assert {k: after[k] for k in unchanged} == pytest.approx(unchanged, rel=1e-12)
    finally:
        live.communicate("\n", timeout=120)

    metrics.compact(str(tmp_path))  # now the last writer has exited too
    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        "counter_archive.db",
        "gauge_mostrecent_archive.db",
        "histogram_archive.db",
    ]
    final = _samples(tmp_path)
    assert _value(final, "worker_tasks_total", task="shipshape.run_job", outcome="failed") == 5
    assert _value(final, "http_requests_in_progress") is None  # no live process: no sample
    assert _value(final, "backup_size_bytes") == 7.0


def test_files_of_modes_this_service_does_not_use_are_left_alone(tmp_path: Path) -> None:
    dead = 4_194_305  # above the kernel's largest pid_max: no process has it
    for name in (f"gauge_max_{dead}.db", f"gauge_all_{dead}.db", "notes.db"):
        (tmp_path / name).write_bytes(b"")
    metrics.compact(str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted(
        [f"gauge_max_{dead}.db", f"gauge_all_{dead}.db", "notes.db"]
    )


@pytest.mark.parametrize(
    ("state", "outcome"),
    [("SUCCESS", "succeeded"), ("RETRY", "retried"), ("FAILURE", "failed"),
     ("REJECTED", "failed"), (None, "failed")],
)  # fmt: skip
def test_each_task_run_counts_once_by_outcome_with_its_duration(
    state: str | None, outcome: str
) -> None:
    task = type("Task", (), {"name": "shipshape.test_task"})()

    def read() -> dict[str, float]:
        labels = {"task": "shipshape.test_task"}
        return {
            o: REGISTRY.get_sample_value("worker_tasks_total", {**labels, "outcome": o}) or 0.0
            for o in TaskOutcome
        } | {"runs": REGISTRY.get_sample_value(
            "worker_task_duration_seconds_count", labels) or 0.0}  # fmt: skip

    before = read()
    telemetry._run_started(task_id="t-1")
    telemetry._run_ended(task_id="t-1", task=task, state=state)
    after = read()
    assert {k: after[k] - before[k] for k in after} == {
        **{o.value: 0.0 for o in TaskOutcome},
        outcome: 1.0,
        "runs": 1.0,
    }
    assert telemetry._started == {}


def test_a_celery_task_run_is_counted_through_the_signals(tmp_path: Path) -> None:
    from app.worker.celery_app import make_celery

    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    app = make_celery(settings)

    @app.task(name="shipshape.test_signals")  # type: ignore[untyped-decorator]  # Celery: untyped
    def sample(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    def count(outcome: str) -> float:
        labels = {"task": "shipshape.test_signals", "outcome": outcome}
        return REGISTRY.get_sample_value("worker_tasks_total", labels) or 0.0

    before = (count("succeeded"), count("failed"))
    sample.apply(args=[False])
    sample.apply(args=[True])
    assert (count("succeeded"), count("failed")) == (before[0] + 1, before[1] + 1)


@pytest.fixture
def worker_metrics(tmp_path: Path) -> Any:
    port = _free_port()
    settings = make_settings(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", worker_metrics_port=port,
        metrics_token="s3cret-token", metrics_allowed_networks="192.0.2.0/24",
    )  # fmt: skip
    server = telemetry.serve_metrics(settings)
    assert server is not None
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=60)
    try:
        connection.request(method, parts.path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_worker_metrics_need_the_token_like_the_apps(worker_metrics: str) -> None:
    status, headers, body = _get(f"{worker_metrics}/metrics")
    assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")
    assert json.loads(body) == {
        "detail": "metrics need the METRICS_TOKEN bearer token or an allowed network"
    }
    assert _get(f"{worker_metrics}/metrics", Authorization="Bearer wrong")[0] == 401
    status, headers, body = _get(f"{worker_metrics}/metrics", Authorization="Bearer s3cret-token")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"# TYPE worker_tasks_total counter" in body
    assert b"# TYPE worker_task_duration_seconds histogram" in body


def test_worker_metrics_answer_other_requests_with_json_errors(worker_metrics: str) -> None:
    status, _, body = _get(f"{worker_metrics}/", Authorization="Bearer s3cret-token")
    assert (status, json.loads(body)) == (404, {"detail": "not found"})
    status, headers, body = _get(
        f"{worker_metrics}/metrics", "POST", Authorization="Bearer s3cret-token"
    )
    assert (status, headers["Allow"], json.loads(body)["detail"]) == (
        405, "GET, HEAD", "method not allowed"
    )  # fmt: skip
    status, _, body = _get(f"{worker_metrics}/metrics", "HEAD", Authorization="Bearer s3cret-token")
    assert (status, body) == (200, b"")


def test_worker_metrics_off_or_without_a_port_leave_the_worker_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    assert telemetry.serve_metrics(make_settings(tmp_path, database, worker_metrics_port=0)) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, database, worker_metrics_port=port)
        with caplog.at_level(logging.ERROR, logger="app.worker.telemetry"):
            assert telemetry.serve_metrics(settings) is None
    assert [(r.getMessage(), r.fields["port"]) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("worker metrics not served", port)
    ]
