"""Small helpers for the Docker tiers: containers and volumes that are always removed,
HTTP on 127.0.0.1; the docker CLI and polling come from tools/docker.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tools.docker import ROOT, DockerError, docker, free_port, wait_until

__all__ = ["ROOT", "DockerError", "docker", "free_port", "wait_until"]  # shared with bench/
# Images the tests build are named after this checkout: two checkouts (or CI and a developer
# on one engine) never retag each other's images, and none is the `shipshape` of `make prod`.
CHECKOUT = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
TEST_IMAGE = f"shipshape-test-{CHECKOUT}"

# Secrets good enough for ENVIRONMENT=production (random per test run).
PROD_SECRETS = {
    "SECRET_KEY": secrets.token_urlsafe(40),
    "JWT_SECRET_KEY": secrets.token_urlsafe(40),
    "METRICS_TOKEN": secrets.token_urlsafe(40),
}


def http_get(
    url: str, timeout: float = 5, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Container:
    id: str

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.id).stdout.strip()

    def port(self, container_port: int = 8000) -> int:
        mapping = docker("port", self.id, f"{container_port}/tcp").stdout.split()[0]
        return int(mapping.rsplit(":", 1)[1])

    def url(self, path: str, container_port: int = 8000) -> str:
        return f"http://127.0.0.1:{self.port(container_port)}{path}"

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def json_logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.inspect("{{.State.Running}}") != "true":
                raise AssertionError(f"container exited:\n{self.logs()[-3000:]}")
            return http_get(self.url("/ready"))[0] == 200

        try:
            wait_until(ready, timeout, "/ready to answer 200")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- container logs ---\n{self.logs()[-3000:]}") from None


@contextlib.contextmanager
def running(
    image: str,
    *command: str,
    env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    publish: bool = True,
) -> Iterator[Container]:
    """A detached container, removed with its anonymous volumes whatever happens."""
    args = ["run", "--detach", "--label", "shipshape-test=1"]
    if publish:
        args += ["--publish", "127.0.0.1::8000"]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    container_id = docker(*args, *options, image, *command).stdout.strip()
    try:
        yield Container(container_id)
    finally:
        docker("rm", "--force", "--volumes", container_id, check=False)


@contextlib.contextmanager
def volume() -> Iterator[str]:
    name = f"shipshape-test-{secrets.token_hex(4)}"
    docker("volume", "create", "--label", "shipshape-test=1", name)
    try:
        yield name
    finally:
        docker("volume", "rm", "--force", name, check=False)
