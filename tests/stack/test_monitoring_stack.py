"""The production stack with its monitoring overlay (docker-compose.monitoring.yml), up for
real: Prometheus scrapes every app replica and exporter, and an alert fires when its fault
happens, reaches the receiver through Alertmanager, and resolves when the fault is gone."""

from __future__ import annotations

import functools
import json
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_utils import ROOT, docker, wait_until
from tests.stack.conftest import Stack, write_env_file
from tools.compose_env import MONITORING_SECRETS
from tools.docker import free_port

ALERTS_OVERLAY = Path(__file__).with_name("docker-compose.alerts.yml")
# One target per app replica (two), the worker, each exporter, Alertmanager and Prometheus.
EXPECTED_JOBS = ["alertmanager", "app", "app", "nginx", "postgres", "prometheus", "redis",
                 "worker"]  # fmt: skip


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("monitored")
    (folder / "pebble-ca").mkdir()
    # Alertmanager's own file with its waits cut from minutes to seconds: nothing else changed.
    product = (ROOT / "monitoring" / "alertmanager" / "alertmanager.yml").read_text()
    fast = product.replace("group_wait: 30s\n", "group_wait: 1s\n").replace(
        "group_interval: 5m\n", "group_interval: 5s\n"
    )
    assert "group_wait: 1s\n" in fast
    assert "group_interval: 5s\n" in fast
    (folder / "alertmanager.yml").write_text(fast)
    (folder / "alertmanager.yml").chmod(0o644)
    http_port, https_port = free_port(), free_port()
    password = secrets.token_urlsafe(16)
    prometheus, alertmanager = free_port(), free_port()
    values = write_env_file(
        folder / "env", http_port, https_port, password,
        PROMETHEUS_PORT=str(prometheus), ALERTMANAGER_PORT=str(alertmanager),
        ALERT_WEBHOOK_URL="http://alert-receiver:8080/hook",
        # Mail goes through the service's own SMTP settings: here the receiver's SMTP server.
        ALERT_EMAIL_TO="ops@example.test", SMTP_HOST="alert-receiver", SMTP_PORT="2525",
        SMTP_FROM="alerts@example.test",
    )  # fmt: skip
    stack = Stack(
        f"shipshape-monitored-{secrets.token_hex(3)}", folder / "env", http_port, https_port,
        password, folder / "pebble-ca", values,
        overlays=("docker-compose.monitoring.yml", str(ALERTS_OVERLAY)),
        extra_environment={"ALERTMANAGER_TEST_CONFIG": str(folder / "alertmanager.yml")},
    )  # fmt: skip
    try:
        stack.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "240", timeout=900)
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", check=False)


def _prometheus(stack: Stack, path: str) -> Any:
    port = stack.values["PROMETHEUS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as reply:
        return json.load(reply)["data"]


def _targets(stack: Stack) -> list[tuple[str, str]]:
    return sorted(
        (target["labels"]["job"], target["health"])
        for target in _prometheus(stack, "/api/v1/targets")["activeTargets"]
    )


def _all_up(stack: Stack) -> bool:
    targets = _targets(stack)
    return [job for job, _ in targets] == EXPECTED_JOBS and all(h == "up" for _, h in targets)


def _notifications(stack: Stack) -> list[dict[str, Any]]:
    """Every notification the receiver got (Alertmanager's webhook JSON), in order."""
    lines = stack.compose("logs", "--no-log-prefix", "alert-receiver").stdout.splitlines()
    return [
        json.loads(line.removeprefix("NOTIFICATION "))
        for line in lines
        if line.startswith("NOTIFICATION ")
    ]


def _emails(stack: Stack) -> list[dict[str, str]]:
    """Every message the receiver's SMTP server got: its recipient and subject."""
    lines = stack.compose("logs", "--no-log-prefix", "alert-receiver").stdout.splitlines()
    return [json.loads(line.removeprefix("EMAIL ")) for line in lines if line.startswith("EMAIL ")]


def _mailed(stack: Stack, alertname: str, status: str) -> bool:
    """Alertmanager's default subject: `[FIRING:1] AppDown (page)`, `[RESOLVED] ...`."""
    return any(
        mail["to"] == "ops@example.test"
        and mail["subject"].startswith(f"[{status.upper()}")
        and alertname in mail["subject"]
        for mail in _emails(stack)
    )


def _seen(stack: Stack, alertname: str, status: str) -> bool:
    return any(
        alert["labels"]["alertname"] == alertname and alert["status"] == status
        for notification in _notifications(stack)
        for alert in notification["alerts"]
    )


def test_every_target_is_scraped(monitored: Stack) -> None:
    """Both app replicas and the worker (found through Docker's DNS, with the metrics token),
    the three exporters (Postgres through its read-only role, Redis with its password), Alertmanager
    and Prometheus itself."""
    wait_until(lambda: _all_up(monitored), 120, "every target up")
    for query in ("pg_up", "redis_up", "nginx_up", 'jobs{state="queued"}'):
        [sample] = _prometheus(monitored, f"/api/v1/query?query=max({query})")["result"]
        assert sample["value"][1] == ("1" if query.endswith("_up") else "0"), query


def _value(stack: Stack, query: str) -> float | None:
    result = _prometheus(stack, f"/api/v1/query?query={urllib.parse.quote(query)}")["result"]
    return float(result[0]["value"][1]) if result else None


def test_the_worker_reports_its_task_runs_and_the_jobs_that_ended(monitored: Stack) -> None:
    """An export through the API runs on the worker: its run, how long it took and the job's
    end reach Prometheus from the worker's own /metrics."""
    wait_until(lambda: _all_up(monitored), 120, "every target up")
    accepted = monitored.https("POST", "/api/v1/items/export", headers=monitored.login())
    assert accepted.status == 202, accepted.body
    ended = 'sum(jobs_finished_total{job="worker",kind="export",state="succeeded"})'
    wait_until(lambda: (_value(monitored, ended) or 0) >= 1, 120, "the export's end in Prometheus")
    run = 'task="shipshape.run_job",job="worker"'
    assert (_value(monitored, f'sum(worker_tasks_total{{{run},outcome="succeeded"}})') or 0) >= 1
    assert (_value(monitored, f"sum(worker_task_duration_seconds_count{{{run}}})") or 0) >= 1
    assert _value(monitored, f'sum(worker_tasks_total{{{run},outcome="failed"}})') in (None, 0)


def test_volumes_backups_and_the_certificate_are_measured(monitored: Stack) -> None:
    """The app reads the database's and the backups' volumes (mounted read-only), the newest
    backup, and the certificate nginx serves (the bootstrap one: valid for days, not past)."""
    monitored.compose("exec", "-T", "backup", "/bin/sh", "/opt/shipshape/backup.sh", "--once")
    made = wait_until(
        lambda: _value(monitored, "max(backup_last_success_timestamp_seconds)"), 120,
        "the backup in Prometheus",
    )  # fmt: skip
    assert time.time() - 300 < made <= time.time()
    assert (_value(monitored, "max(backup_size_bytes)") or 0) > 0
    for volume in ("postgres", "backups", "uploads", "exports"):
        size = _value(monitored, f'max(volume_size_bytes{{volume="{volume}"}})')
        free = _value(monitored, f'max(volume_available_bytes{{volume="{volume}"}})')
        assert size is not None, volume
        assert free is not None, volume
        assert 0 < free <= size, volume
    expiry = _value(monitored, "min(certificate_expiry_timestamp_seconds)")
    assert expiry is not None
    assert expiry - time.time() > 14 * 86400  # no CertificateExpiringSoon on a fresh stack


def test_monitoring_services_get_only_their_secrets(monitored: Stack) -> None:
    for service, expected in MONITORING_SECRETS.items():
        for container in monitored.containers(service):
            [info] = json.loads(docker("inspect", container).stdout)
            mounted = {
                mount["Destination"].removeprefix("/run/secrets/")
                for mount in info["Mounts"]
                if mount["Destination"].startswith("/run/secrets/")
            }
            assert mounted == expected, service
            exposed = json.dumps([info["Config"]["Env"], info["Args"], info["Path"]])
            for name in ("DB_PASSWORD", "REDIS_PASSWORD", "METRICS_TOKEN",
                         "MONITORING_DB_PASSWORD"):  # fmt: skip
                assert monitored.values[name] not in exposed, (service, name)


def test_an_alert_fires_reaches_the_receiver_and_resolves(monitored: Stack) -> None:
    """The faults: every app replica and the worker stopped (AppDown, WorkerDown: their
    targets leave Docker's DNS) and the Postgres exporter stopped (TargetDown: its scrape
    fails)."""
    wait_until(lambda: _all_up(monitored), 120, "every target up")
    assert not _notifications(monitored)  # a healthy stack sends nothing
    assert not _emails(monitored)
    faults = ("app", "worker", "postgres-exporter")
    monitored.compose("stop", *faults)
    try:
        for alert in ("AppDown", "WorkerDown", "TargetDown"):
            wait_until(functools.partial(_seen, monitored, alert, "firing"), 300,
                       f"{alert} at the receiver")  # fmt: skip
    finally:
        monitored.compose("start", *faults)
    for alert in ("AppDown", "WorkerDown", "TargetDown"):
        wait_until(functools.partial(_seen, monitored, alert, "resolved"), 300,
                   f"{alert} resolved")  # fmt: skip
    # The same alerts by e-mail, through the SMTP settings the service uses.
    for status in ("firing", "resolved"):
        wait_until(functools.partial(_mailed, monitored, "AppDown", status), 120,
                   f"AppDown {status} by e-mail")  # fmt: skip
    [target_down] = [
        alert for notification in _notifications(monitored) for alert in notification["alerts"]
        if alert["labels"]["alertname"] == "TargetDown" and alert["status"] == "firing"
    ]  # fmt: skip
    assert target_down["labels"]["job"] == "postgres"
    assert target_down["labels"]["severity"] == "page"
    assert target_down["annotations"]["runbook"] == "docs/operations.md#alert-targetdown"
