"""Docker Swarm: the stack file deployed on a single-node swarm, a rolling update under load
with zero failed requests, and an automatic rollback from an image that never gets healthy."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.docker_utils import ROOT, docker, wait_until

pytestmark = pytest.mark.stack

STACK = f"shipshape-swarm-{secrets.token_hex(2)}"
IMAGE = "shipshape-swarm"
SECRET_NAMES = (
    "secret_key", "jwt_secret_key", "db_password", "redis_password", "admin_password",
    "webhook_secret", "metrics_token",
)  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Swarm:
    https_port: int
    env: dict[str, str]
    created_secrets: list[str] = field(default_factory=list)

    def deploy(self, tag: str) -> None:
        result = subprocess.run(
            ["docker", "stack", "deploy", "--prune", "-c", "docker-stack.yml", STACK],
            cwd=ROOT, env={**self.env, "APP_TAG": tag}, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

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

    def get(self, path: str) -> int:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.https_port}{path}", headers={"Host": "example.test"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def build_variant(tag: str, extra: str) -> None:
    """Another image of the same app: a new id, so the update really replaces the tasks."""
    dockerfile = f"FROM shipshape-test:prod\nLABEL variant={tag}\n{extra}\n"
    subprocess.run(
        ["docker", "build", "-q", "-t", f"{IMAGE}:{tag}", "-"],
        input=dockerfile,
        text=True,
        capture_output=True,
        check=True,
    )


@pytest.fixture(scope="module")
def swarm(prod_image: str) -> Iterator[Swarm]:
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
    https_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DOMAIN", "BASE_URL")},
        "STACK_NAME": STACK,
        "APP_IMAGE": IMAGE,
        "DOMAIN": "example.test",
        "BASE_URL": f"https://example.test:{https_port}",
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(https_port),
        "CREATE_SUPERUSER": "true",
    }
    swarm = Swarm(https_port, env)
    try:
        for name in SECRET_NAMES:
            full = f"{STACK}_{name}"
            subprocess.run(
                ["docker", "secret", "create", full, "-"],
                input=secrets.token_urlsafe(32),
                text=True,
                capture_output=True,
                check=True,
            )
            swarm.created_secrets.append(full)
        swarm.deploy("v1")
        wait_until(lambda: len(swarm.running_tasks("app")) == 2, 180, "two app replicas running")
        wait_until(lambda: swarm.get("/ready") == 200, 180, "/ready 200 through nginx on the swarm")
        yield swarm
    finally:
        _tear_down(swarm if "swarm" in locals() else None, initialised_here)


def _tear_down(swarm: Swarm | None, leave: bool) -> None:
    """Remove everything the test made, step by step: one failing step does not stop the rest."""
    label = f"label=com.docker.stack.namespace={STACK}"
    steps = [
        lambda: docker("stack", "rm", STACK, check=False),
        lambda: wait_until(
            lambda: not docker("ps", "-aq", "--filter", label).stdout.strip(),
            120,
            "the stack's containers to go",
        ),
        lambda: wait_until(
            lambda: not docker("network", "ls", "-q", "--filter", label).stdout.strip(),
            120,
            "the stack's networks to go",
        ),
        *[
            (lambda n=name: docker("secret", "rm", n, check=False))
            for name in (swarm.created_secrets if swarm else [])
        ],
        lambda: [
            docker("volume", "rm", "-f", v, check=False)
            for v in docker("volume", "ls", "-q", "--filter", label).stdout.split()
        ],
        lambda: docker(
            "config",
            "rm",
            *docker("config", "ls", "-q", "--filter", label).stdout.split(),
            check=False,
        ),
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
        except AssertionError as exc:
            problems.append(str(exc))
    assert not problems, problems


def test_rolling_update_under_load_fails_no_request(swarm: Swarm) -> None:
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline and len(results) < 20_000:
            try:
                results.append(swarm.get("/api/v1/openapi.json"))
            except OSError:
                results.append(0)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        docker("service", "update", "--detach", "--image", f"{IMAGE}:v2", f"{STACK}_app")
        wait_until(
            lambda: (
                swarm.service("app", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}")
                == "completed"
            ),
            240,
            "the rolling update to complete",
            interval=1,
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    failures = [status for status in results if status != 200]
    print(f"\nrolling update: {len(results)} requests during the update, {len(failures)} failed")
    assert len(results) > 50
    assert failures == []
    assert all(task.endswith(f"{IMAGE}:v2") for task in swarm.running_tasks("app"))


def test_an_update_that_never_gets_healthy_rolls_back_by_itself(swarm: Swarm) -> None:
    image = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
    before = swarm.service("app", image)
    docker("service", "update", "--detach", "--image", f"{IMAGE}:broken", f"{STACK}_app")
    wait_until(
        lambda: swarm.service("app", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}") == "rollback_completed",
        300, "the automatic rollback", interval=1,
    )  # fmt: skip
    assert swarm.service("app", image) == before
    assert not any("broken" in task for task in swarm.running_tasks("app"))
    assert swarm.get("/ready") == 200
