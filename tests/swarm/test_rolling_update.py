"""Docker Swarm: the stack file deployed on a single-node swarm, a rolling update under load
with zero failed requests on real endpoints, and a deploy of an image that never gets healthy
rolled back as a whole (app and worker). nginx publishes no port here: Swarm would bind it on
every address of the machine; the tests reach it on its docker_gwbridge address."""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.docker_utils import ROOT, TEST_IMAGE, DockerError, docker, wait_until
from tests.helpers import LOGIN_HEADERS, LOGIN_PATH, bearer, login_form
from tools.compose_env import SECRET_FILES

# Leaving the swarm at the end breaks name resolution in the containers that run meanwhile
# (Docker 20.10): `make test` runs this tier with no other Docker test beside it.
pytestmark = pytest.mark.alone

STACK = f"shipshape-swarm-{secrets.token_hex(2)}"
MONITORING = f"{STACK}-monitoring"  # what scripts/deploy-swarm-monitoring.sh deploys
IMAGE = f"{TEST_IMAGE}-swarm"


@dataclass
class Swarm:
    stack_file: Path
    env: dict[str, str]
    admin_password: str = ""
    created_secrets: list[str] = field(default_factory=list)
    _address: str = ""

    def deploy(self, tag: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`make deploy`'s script: deploys and waits for the app's and the worker's updates to end."""
        result = subprocess.run(
            ["sh", "scripts/deploy-swarm.sh", STACK, str(self.stack_file)],
            cwd=ROOT, env={**self.env, "APP_TAG": tag}, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stdout + result.stderr + self.diagnosis()
        return result

    def diagnosis(self) -> str:
        """The tasks of the app and the worker with their errors, and the worker's last log
        lines: what explains a failed update."""
        parts = []
        for name in ("app", "worker"):
            tasks = docker("service", "ps", "--no-trunc", "--format",
                           "{{.Name}} {{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
                           f"{STACK}_{name}", check=False)  # fmt: skip
            parts.append(f"\n--- {name} tasks:\n{tasks.stdout}{tasks.stderr}")
        logs = docker("service", "logs", "--tail", "30", "--timestamps", f"{STACK}_worker",
                      check=False)  # fmt: skip
        return "".join(parts) + f"\n--- worker log:\n{logs.stdout[-6000:]}{logs.stderr[-2000:]}"

    def service(self, name: str, template: str) -> str:
        return docker("service", "inspect", "--format", template, f"{STACK}_{name}").stdout.strip()

    def running_tasks(self, name: str) -> list[str]:
        out = docker(
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}|{{.Image}}",
            f"{STACK}_{name}",
        ).stdout
        return [line for line in out.splitlines() if line.startswith("Running")]

    def address(self) -> str:
        """nginx on this host without a published port: its address on docker_gwbridge, the
        bridge that gives Swarm containers their way out (Swarm cannot publish on 127.0.0.1)."""
        if not self._address:
            [nginx] = docker(
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                f"label=com.docker.swarm.service.name={STACK}_nginx",
            ).stdout.split()
            containers = json.loads(
                docker(
                    "network", "inspect", "docker_gwbridge", "--format", "{{json .Containers}}"
                ).stdout
            )
            self._address = containers[nginx]["IPv4Address"].split("/")[0]
        return self._address

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"https://{self.address()}{path}", data=body, method=method,
            headers={"Host": "example.test", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        return self.request("GET", path, headers=headers)[0]

    def login(self) -> dict[str, str]:
        form = login_form("admin", self.admin_password)
        return bearer(*self.request("POST", LOGIN_PATH, form, LOGIN_HEADERS))


def stack_file_without_published_ports(folder: Path) -> Path:
    """docker-stack.yml as it is, except that nginx publishes no port: Swarm would bind it on
    every address of this machine. Config files keep pointing into the project."""
    text = (ROOT / "docker-stack.yml").read_text()
    # nginx's block: `ports:` and its indented lines (comments and entries).
    text, removed = re.subn(r"^    ports:\n(?:      .*\n)+", "", text, flags=re.M)
    assert removed == 1, "nginx's ports block not found in docker-stack.yml"
    text = text.replace("file: ./", f"file: {ROOT}/")
    path = folder / "docker-stack.yml"
    path.write_text(text)
    return path


def build_variant(tag: str, extra: str) -> None:
    """Another image of the same app: a new id, so the update really replaces the tasks."""
    dockerfile = f"FROM {TEST_IMAGE}:prod\nLABEL variant={tag}\n{extra}\n"
    subprocess.run(
        ["docker", "build", "-q", "-t", f"{IMAGE}:{tag}", "-"],
        input=dockerfile,
        text=True,
        capture_output=True,
        check=True,
    )


@pytest.fixture(scope="module")
def swarm(prod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    initialised_here = state != "active"
    if initialised_here:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    build_variant("v1", "")
    build_variant("v2", "")
    # An image whose healthcheck always fails: the update must roll back by itself.
    build_variant(
        "broken",
        'USER 0\nRUN printf "import sys\\nsys.exit(1)\\n" > /app/scripts/healthcheck.py\nUSER 10001:10001',
    )
    # An image that runs, answers /live and never /ready: readiness must gate the rollout.
    build_variant(
        "unready",
        "USER 0\nRUN sed -i 's/healthy, checks, _ = await _report(request)/healthy, checks, _ = "
        "False, {}, None/' /app/app/api/routes/health.py && grep -q 'False, {}, None' "
        "/app/app/api/routes/health.py\nUSER 10001:10001",
    )
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DOMAIN", "BASE_URL", "PUBLISH_IP")},
        "STACK_NAME": STACK,
        "APP_IMAGE": IMAGE,
        "DOMAIN": "example.test",
        "BASE_URL": "https://example.test",
        "CREATE_SUPERUSER": "true",
        "DEPLOY_TIMEOUT": "600",
    }
    swarm = Swarm(stack_file_without_published_ports(tmp_path_factory.mktemp("swarm")), env)
    try:
        for name in SECRET_FILES:
            full = f"{STACK}_{name}"
            value = secrets.token_urlsafe(32)
            subprocess.run(
                ["docker", "secret", "create", full, "-"],
                input=value,
                text=True,
                capture_output=True,
                check=True,
            )
            swarm.created_secrets.append(full)
            if name == "admin_password":
                swarm.admin_password = value
        first = swarm.deploy("v1")
        # The first deploy returns once the stack runs (it returned at once): both app
        # replicas and the worker running, healthy (for the app: ready once).
        assert "new stack: waiting for every replica" in first.stdout
        assert len(swarm.running_tasks("app")) == 2, swarm.diagnosis()
        assert len(swarm.running_tasks("worker")) == 1, swarm.diagnosis()
        wait_until(lambda: swarm.get("/ready") == 200, 180, "/ready 200 through nginx on the swarm")
        yield swarm
    finally:
        _tear_down(swarm if "swarm" in locals() else None, initialised_here)


def _tear_down(swarm: Swarm | None, leave: bool) -> None:
    """Remove everything the test made, step by step: one failing step does not stop the rest."""
    label = f"label=com.docker.stack.namespace={STACK}"
    monitoring = f"label=com.docker.stack.namespace={MONITORING}"
    steps = [
        # The monitoring stack first: it holds on to the service stack's networks.
        lambda: docker("stack", "rm", MONITORING, check=False),
        lambda: wait_until(
            lambda: not docker("ps", "-aq", "--filter", monitoring).stdout.strip(),
            120,
            "the monitoring stack's containers to go",
        ),
        lambda: docker("stack", "rm", STACK, check=False),
        lambda: wait_until(
            lambda: not docker("ps", "-aq", "--filter", label).stdout.strip(),
            120,
            "the stack's containers to go",
        ),
        lambda: wait_until(
            lambda: (
                not docker("network", "ls", "-q", "--filter", label).stdout.strip()
                and not docker("network", "ls", "-q", "--filter", monitoring).stdout.strip()
            ),
            120,
            "the stacks' networks to go",
        ),
        *[
            (lambda n=name: docker("secret", "rm", n, check=False))
            for name in (swarm.created_secrets if swarm else [])
        ],
        *[
            step
            for namespace in (label, monitoring)
            for step in (
                lambda namespace=namespace: [
                    docker("volume", "rm", "-f", v, check=False)
                    for v in docker("volume", "ls", "-q", "--filter", namespace).stdout.split()
                ],
                lambda namespace=namespace: docker(
                    "config",
                    "rm",
                    *docker("config", "ls", "-q", "--filter", namespace).stdout.split(),
                    check=False,
                ),
            )
        ],
    ]
    if leave:
        steps.append(lambda: docker("swarm", "leave", "--force", check=False))
        # `swarm init` also created the docker_gwbridge network; leaving does not remove it.
        steps.append(
            lambda: wait_until(
                lambda: (
                    docker("network", "rm", "docker_gwbridge", check=False).returncode == 0
                    or not docker(
                        "network", "ls", "-q", "--filter", "name=^docker_gwbridge$"
                    ).stdout.strip()
                ),
                60,
                "the docker_gwbridge network to go",
            )
        )
    problems = []
    for step in steps:
        try:
            step()
        except (AssertionError, TimeoutError, DockerError) as exc:
            problems.append(str(exc))
    assert not problems, problems


def test_rolling_update_under_load_fails_no_request(swarm: Swarm) -> None:
    """`make deploy` of a new image while clients read /ready and an authenticated list: the
    old replicas drain (503 on /ready after SIGTERM is tried on another replica by nginx)."""
    auth = swarm.login()
    results: list[tuple[str, int]] = []
    stop = threading.Event()

    def load(path: str, headers: dict[str, str]) -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline and len(results) < 40_000:
            try:
                results.append((path, swarm.get(path, headers)))
            except OSError:
                results.append((path, 0))

    paths = [("/ready", {}), ("/api/v1/items?limit=10", auth)] * 3
    workers = [threading.Thread(target=load, args=path) for path in paths]
    for worker in workers:
        worker.start()
    try:
        swarm.deploy("v2")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    failures = [(path, status) for path, status in results if status != 200]
    print(
        f"\nrolling update: {len(results)} requests during the update ({len(workers)} clients), "
        f"{len(failures)} failed, {sum(1 for _, s in failures if s == 503)} of them 503"
    )
    assert len(results) > 50
    assert failures == []
    assert all(task.endswith(f"{IMAGE}:v2") for task in swarm.running_tasks("app"))
    assert all(task.endswith(f"{IMAGE}:v2") for task in swarm.running_tasks("worker"))


def test_deploying_the_running_tag_again_changes_nothing_and_returns(swarm: Swarm) -> None:
    """The fault: it waited out DEPLOY_TIMEOUT and failed: the version index of every
    service changes on `stack deploy`, but Swarm sets no update status when no task does."""
    image = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
    assert swarm.service("app", image).startswith(f"{IMAGE}:v2")
    result = swarm.deploy("v2")
    assert "unchanged: they already run this image and these settings" in result.stdout


def rollback(swarm: Swarm) -> subprocess.CompletedProcess[str]:
    """`make rollback`'s script."""
    return subprocess.run(
        ["sh", "scripts/rollback-swarm.sh", STACK], cwd=ROOT, env=swarm.env,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def _images(swarm: Swarm) -> dict[str, str]:
    image = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
    return {name: swarm.service(name, image).split("@")[0] for name in ("app", "worker")}


def test_rollback_returns_both_services_to_the_previous_image(swarm: Swarm) -> None:
    result = rollback(swarm)
    assert result.returncode == 0, result.stdout + result.stderr + swarm.diagnosis()
    assert _images(swarm) == {"app": f"{IMAGE}:v1", "worker": f"{IMAGE}:v1"}
    assert f"rolled back: {STACK}_app and {STACK}_worker run {IMAGE}:v1" in result.stdout
    wait_until(lambda: swarm.get("/ready") == 200, 120, "/ready 200 after the rollback")


def test_a_deploy_that_never_gets_healthy_rolls_the_whole_stack_back(swarm: Swarm) -> None:
    """The broken image passes the worker's own check: Swarm rolls back the app only, and the
    deploy script rolls the worker back too and fails."""
    image = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
    before = {name: swarm.service(name, image) for name in ("app", "worker")}
    result = swarm.deploy("broken", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolling the worker back too" in result.stderr
    assert f"{IMAGE}:broken: " in result.stderr  # the app's tasks, the failed ones among them
    assert swarm.service("app", "{{.UpdateStatus.State}}") == "rollback_completed"
    wait_until(
        lambda: {name: swarm.service(name, image) for name in ("app", "worker")} == before,
        120, "app and worker on their previous image", interval=1,
    )  # fmt: skip
    wait_until(
        lambda: not any("broken" in t for n in ("app", "worker") for t in swarm.running_tasks(n)),
        180, "no task left on the broken image", interval=1,
    )  # fmt: skip
    assert swarm.get("/ready") == 200
    # `make rollback` now: Swarm's previous spec of the app is gone (it rolled back by
    # itself), the worker's is the broken image. It used to put the worker on it beside the
    # app and exit 0. Now both go to the image the app's record names, or stay, and it says so.
    after = rollback(swarm)
    images = _images(swarm)
    assert images["app"] == images["worker"], (images, after.stdout, after.stderr)
    assert "broken" not in images["app"]
    if after.returncode == 0:
        assert f"rolled back: {STACK}_app and {STACK}_worker run {images['app']}" in after.stdout
    else:
        assert "nothing to roll back" in after.stderr, after.stdout + after.stderr
    print(f"\nrollback after Swarm's own: {after.stdout.strip()} {after.stderr.strip()}")


def test_a_build_that_never_gets_ready_is_rolled_back(swarm: Swarm) -> None:
    """The fault: the Swarm healthcheck was /live, so a build whose /ready never answered 200
    rolled out completely and `make deploy` exited 0 (3,827 of 3,827 /ready answers 503)."""
    before = _images(swarm)
    result = swarm.deploy("unready", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the update failed and Swarm rolled it back" in result.stderr
    wait_until(
        lambda: _images(swarm) == before, 120, "app and worker on their previous image",
        interval=1,
    )  # fmt: skip
    wait_until(lambda: swarm.get("/ready") == 200, 120, "/ready 200 after the rollback")


# One target per app replica (two), the worker, each exporter, Alertmanager and Prometheus.
MONITORED_JOBS = ["alertmanager", "app", "app", "nginx", "postgres", "prometheus", "redis",
                  "worker"]  # fmt: skip


def test_the_monitoring_stack_beside_it_scrapes_every_replica(swarm: Swarm) -> None:
    """`make deploy-monitoring`'s script: docker-stack.monitoring.yml as a stack of its own on
    the service stack's networks and secrets. Prometheus, at the address the script prints
    (this node's docker_gwbridge: nothing is published), finds both app replicas and the
    worker through Docker's DNS and scrapes them with the metrics token, and the exporters
    through the monitoring role and the password file the one-shot services made."""
    webhook = f"{STACK}_alert_webhook_url"
    # As `make secrets` makes it from an empty file: a line end, which sends no webhook.
    subprocess.run(["docker", "secret", "create", webhook, "-"], input="\n", text=True,
                   capture_output=True, check=True)  # fmt: skip
    swarm.created_secrets.append(webhook)
    result = subprocess.run(
        ["sh", "scripts/deploy-swarm-monitoring.sh", STACK, "docker-stack.monitoring.yml"],
        cwd=ROOT, env=swarm.env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"^Prometheus: http://([0-9.]+):9090/alerts", result.stdout, re.M)
    assert found, result.stdout
    assert re.search(r"^Alertmanager: http://[0-9.]+:9093/", result.stdout, re.M), result.stdout

    def query(path: str) -> Any:
        url = f"http://{found[1]}:9090{path}"
        with urllib.request.urlopen(url, timeout=30) as reply:
            return json.load(reply)["data"]

    def targets() -> list[tuple[str, str]]:
        return sorted(
            (t["labels"]["job"], t["health"]) for t in query("/api/v1/targets")["activeTargets"]
        )

    wait_until(
        lambda: targets() == [(job, "up") for job in MONITORED_JOBS], 240,
        "every target up in the Swarm's Prometheus",
    )  # fmt: skip
    for metric in ("pg_up", "redis_up", "nginx_up"):
        [sample] = query(f"/api/v1/query?query=max({metric})")["result"]
        assert sample["value"][1] == "1", metric
