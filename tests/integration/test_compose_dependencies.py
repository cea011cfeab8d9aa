"""The start order of docker-compose.yml, shown by starting it: the app and the worker are
not started while their database or Redis is unhealthy (`condition: service_healthy`), and
are once both are healthy. The stores are the real images; the app's image is replaced by
one that only sleeps, so nothing needs building."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.docker_utils import ROOT, docker

SLEEPER: dict[str, object] = {
    "image": "python:3.11-slim",
    "pull_policy": "never",
    "entrypoint": ["sleep", "infinity"],
    "command": [],
    "healthcheck": {"disable": True},
}
FAILING = {"test": ["CMD", "false"], "interval": "1s", "timeout": "1s", "retries": 1}


class Project:
    def __init__(self, folder: Path) -> None:
        self.name = f"shipshape-deps-{secrets.token_hex(4)}"
        self.env_file = folder / "env"
        self.env_file.write_text("BASE_URL=http://localhost\n")
        self.override = folder / "override.yml"

    def write(self, unhealthy: str | None) -> None:
        services: dict[str, dict[str, object]] = {
            "app": SLEEPER,
            "worker": SLEEPER,
            "db": {"environment": {"POSTGRES_PASSWORD": secrets.token_hex(8)}},
            "redis": {"environment": {"REDIS_PASSWORD": secrets.token_hex(8)}},
        }
        if unhealthy:
            services[unhealthy]["healthcheck"] = FAILING
        self.override.write_text(yaml.safe_dump({"services": services}))

    def compose(self, *args: str, check: bool = False) -> tuple[int, str]:
        result = docker(
            "compose", "--project-name", self.name, "--project-directory", str(ROOT),
            "--env-file", str(self.env_file), "-f", str(ROOT / "docker-compose.yml"),
            "-f", str(self.override), *args, check=check, timeout=300,
        )  # fmt: skip
        return result.returncode, result.stdout + result.stderr

    def state(self, service: str) -> str:
        _, out = self.compose("ps", "--all", "--format", "json", service)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return lines[0]["State"] if lines else "absent"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = Project(tmp_path)
    yield made
    made.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


@pytest.mark.parametrize("service", ["app", "worker"])
@pytest.mark.parametrize("dependency", ["db", "redis"])
def test_a_service_is_not_started_while_a_dependency_is_unhealthy(
    project: Project, service: str, dependency: str
) -> None:
    project.write(unhealthy=dependency)
    code, output = project.compose("up", "--detach", "--no-build", service)
    assert code != 0, output
    assert f"{project.name}-{dependency}-1 is unhealthy" in output
    assert project.state(service) in ("created", "absent"), output  # never ran


def test_with_both_stores_healthy_the_app_and_worker_start(project: Project) -> None:
    project.write(unhealthy=None)
    code, output = project.compose("up", "--detach", "--no-build", "app", "worker")
    assert code == 0, output
    assert (project.state("app"), project.state("worker")) == ("running", "running")
