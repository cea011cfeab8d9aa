"""The chart's pods, run as a kubelet would run them (tests/pods/kubelet.py), against real
Postgres and Redis answering by the names the values give: the migrations Job exits 0, the
app's probes pass and it serves, the worker's probe passes and it runs an import of a file
large enough to pass through /tmp, and each pod drains within its grace period. The same run
fails for a deliberate break: a wrong secret path, a writable path missing."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import build_prod_image
from tests.docker_utils import docker, wait_until
from tests.kubernetes.chart import render_objects
from tests.pods.kubelet import Kubelet, kubelet
from tests.server import multipart

ADMIN_PASSWORD = "pods-admin-" + secrets.token_hex(8)
SECRETS = {
    "secret_key": secrets.token_urlsafe(40),
    "jwt_secret_key": secrets.token_urlsafe(40),
    "db_password": "pods-db-" + secrets.token_hex(12),
    "redis_password": "pods-redis-" + secrets.token_hex(12),
    "webhook_secret": secrets.token_urlsafe(40),
    "admin_password": ADMIN_PASSWORD,
    "metrics_token": secrets.token_urlsafe(40),
}
# The release as a first install: the chart's defaults, a Secret it makes from these values,
# and the first superuser created at start, to log in with.
VALUES = {
    "secrets": {"create": True, "values": SECRETS},
    "config": {"CREATE_SUPERUSER": True},
    "backup": {"enabled": True},
}
ROWS = 60_000  # 2.3 MB: the upload is spooled through /tmp (above 1 MB)


@pytest.fixture(scope="module")
def image() -> str:
    return build_prod_image()


def release(values: dict[str, Any] = VALUES) -> list[dict[str, Any]]:
    return render_objects(values)


@contextlib.contextmanager
def cluster(objects: list[dict[str, Any]], image: str, root: Path) -> Iterator[Kubelet]:
    """A network where Postgres and Redis answer as `database.host` and `redis.host`, and
    a kubelet for the release's pods on it."""
    configmap = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shipshape"
    )["data"]
    network = f"shipshape-pods-{secrets.token_hex(4)}"
    docker("network", "create", "--label", "shipshape-test=1", network)
    started: list[str] = []
    try:
        started.append(docker(
            "run", "--detach", "--label", "shipshape-test=1", "--network", network,
            "--network-alias", configmap["DB_HOST"], "--tmpfs", "/var/lib/postgresql/data",
            "--env", f"POSTGRES_USER={configmap['DB_USER']}",
            "--env", f"POSTGRES_DB={configmap['DB_NAME']}",
            "--env", f"POSTGRES_PASSWORD={SECRETS['db_password']}", "postgres:15-alpine",
        ).stdout.strip())  # fmt: skip
        started.append(docker(
            "run", "--detach", "--label", "shipshape-test=1", "--network", network,
            "--network-alias", configmap["REDIS_HOST"], "redis:7-alpine",
            "redis-server", "--requirepass", SECRETS["redis_password"],
        ).stdout.strip())  # fmt: skip
        wait_until(
            lambda: docker("exec", started[0], "pg_isready", "-U", configmap["DB_USER"],
                           check=False).returncode == 0,
            60, "Postgres to accept connections",
        )  # fmt: skip
        with kubelet(objects, network, root, image) as found:
            yield found
    finally:
        for container in started:
            docker("rm", "--force", "--volumes", container, check=False)
        docker("network", "rm", network, check=False)


def _request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[-500:]


def run_release(cluster: Kubelet, *, until: str = "drained") -> dict[str, float]:
    """Install the release as Kubernetes would: the migrations Job, then the app and the
    worker; an import through both; then each pod stopped. Raises AssertionError (a
    PodFailure when the kubelet would report one) at the first thing that goes wrong."""
    cluster.run_to_completion("migrate", cluster.pod_template("Job", "migrate"), timeout=120)
    app = cluster.start("app", cluster.pod_template("Deployment", "app"))
    worker = cluster.start("worker", cluster.pod_template("Deployment", "worker"))
    web = app.container("app")
    cluster.wait("the app ready (its readiness probe)", web.ready.is_set, timeout=120)

    form = urllib.parse.urlencode({"username": "admin", "password": ADMIN_PASSWORD}).encode()
    status, token = _request(web.url("/api/v1/auth/token"), form)
    assert status == 200, f"login: {status} {token}"
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    lines = (b"pod row %07d,made in a pod\n" % n for n in range(ROWS))
    body, content_type = multipart("file", "items.csv", b"title,description\n" + b"".join(lines))
    status, job = _request(
        web.url("/api/v1/items/import"), body, {**auth, "Content-Type": content_type}
    )
    assert status == 202, f"import: {status} {job}"
    if until == "accepted":
        return {}

    ping = worker.container("worker")
    cluster.wait("the worker ready (its exec probe)", ping.ready.is_set, timeout=120)

    def imported() -> bool:
        status, found = _request(web.url(f"/api/v1/jobs/{job['id']}"), headers=auth)
        assert status == 200, found
        assert found["state"] != "failed", found
        return bool(found["state"] == "succeeded")

    cluster.wait("the import to succeed", imported, timeout=180)
    # Every probe has run on its schedule and passed: the worker's liveness first runs
    # 30 s after its start.
    probes = [p for c in (web, ping) for p in c.probes.values()]
    cluster.wait("every probe to have passed", lambda: all(p.successes for p in probes), 120)
    # A night's backup, as the CronJob's Job runs it, with the imported rows in it.
    cluster.run_to_completion("backup", cluster.pod_template("CronJob", "backup"), timeout=300)
    return {"app": cluster.stop(app), "worker": cluster.stop(worker)}


def test_the_release_runs_as_a_kubelet_runs_it(image: str, tmp_path: Path) -> None:
    objects = release()
    with cluster(objects, image, tmp_path) as found:
        stopped = run_release(found)
    app = found.pod_template("Deployment", "app")
    pre_stop = int(app["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    # The app drains after its preStop sleep, well inside its grace period.
    assert pre_stop <= stopped["app"] < app["terminationGracePeriodSeconds"]
    worker = found.pod_template("Deployment", "worker")
    assert stopped["worker"] < worker["terminationGracePeriodSeconds"]
    # The backup: a dump and its checksum in the backups claim, written by uid 10001.
    daily = tmp_path / "claims" / "shipshape-backups" / "daily"
    [dump] = daily.glob("*.dump")
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert (daily / f"{dump.name}.sha256").read_text().split() == [digest, dump.name]
    assert dump.stat().st_uid == 10001
    assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format


def _broken(change: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    objects = copy.deepcopy(release())
    change(objects)
    return objects


def _specs(objects: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [
        o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
        and o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]


def _wrong_secret_path(objects: list[dict[str, Any]]) -> None:
    for component in ("migrate", "app", "worker"):
        for spec in _specs(objects, component):
            for variable in spec["containers"][0]["env"]:
                if variable["name"] == "DB_PASSWORD_FILE":
                    variable["value"] = "/etc/secrets/db_password"


def _secret_readable_by_root_alone(objects: list[dict[str, Any]]) -> None:
    for component in ("migrate", "app", "worker"):
        for spec in _specs(objects, component):
            for volume in spec["volumes"]:
                if "secret" in volume:
                    volume["secret"]["defaultMode"] = 0o400


def _no_writable_tmp(objects: list[dict[str, Any]]) -> None:
    [spec] = _specs(objects, "app")
    container = spec["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"]


@pytest.mark.parametrize(
    ("change", "failure"),
    [
        (_wrong_secret_path, r"Job pod migrate exited with [1-9].*DB_PASSWORD_FILE.*No such file"),
        (_secret_readable_by_root_alone, r"migrate exited with [1-9].*Permission denied"),
        (_no_writable_tmp, r"pod app: app exited with [1-9]"),
    ],
    ids=["wrong-secret-path", "secret-mode-0400", "no-writable-tmp"],
)
def test_a_broken_pod_spec_fails_the_release(
    image: str, tmp_path: Path, change: Callable[[list[dict[str, Any]]], None], failure: str
) -> None:
    objects = _broken(change)
    with (
        cluster(objects, image, tmp_path) as found,
        pytest.raises(AssertionError, match=re.compile(failure, re.S)),
    ):
        run_release(found, until="accepted")
