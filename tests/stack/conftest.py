"""Stack tier: the production compose stack, up for real on 127.0.0.1 high ports."""

from __future__ import annotations

import http.client
import json
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.docker_utils import ROOT, TEST_IMAGE, wait_until
from tests.helpers import LOGIN_HEADERS, LOGIN_PATH, bearer, login_form
from tools.compose_env import compose_environment, prod_env_file
from tools.docker import free_port

ACME_OVERLAY = Path(__file__).with_name("docker-compose.acme.yml")
DOMAIN = "example.test"


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; of a repeated header, the last value
    body: bytes
    header_names: list[str] = field(default_factory=list)  # lower-cased, each time it came

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Stack:
    project: str
    env_file: Path
    http_port: int
    https_port: int
    admin_password: str
    pebble_ca_dir: Path
    values: dict[str, str] = field(default_factory=dict)
    overlays: tuple[str, ...] = ()  # more compose files, after the ACME overlay
    extra_environment: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"https://{DOMAIN}:{self.https_port}"

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.compose_command(), *args], cwd=ROOT, env=self.environment(), capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def compose_command(self) -> list[str]:
        return [
            "docker", "compose", "--project-name", self.project, "--env-file", str(self.env_file),
            "-f", "docker-compose.yml", "-f", "docker-compose.prod.yml", "-f", str(ACME_OVERLAY),
            *(arg for overlay in self.overlays for arg in ("-f", overlay)),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {
            **compose_environment(self.env_file), "PEBBLE_CA_DIR": str(self.pebble_ca_dir),
            **self.extra_environment,
        }  # fmt: skip

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "--all", "--quiet", service).stdout.split()

    def container(self, service: str) -> str:
        [container] = self.containers(service)
        return container

    def tls_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # bootstrap and test certificates are not public
        for name, version in versions.items():
            setattr(context, name, version)
        return context

    def https(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> Response:  # fmt: skip
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.https_port, context=context or self.tls_context(), timeout=15
        )
        return self._send(connection, method, path, body, headers)

    def http(self, method: str, path: str) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=15)
        return self._send(connection, method, path, None, None)

    @staticmethod
    def _send(
        connection: HTTPConnection,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str] | None,
    ) -> Response:
        headers = {"Host": DOMAIN, **(headers or {})}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            pairs = [(name.lower(), value) for name, value in reply.getheaders()]
            return Response(reply.status, dict(pairs), reply.read(), [name for name, _ in pairs])
        finally:
            connection.close()

    def login(self) -> dict[str, str]:
        form = login_form("admin", self.admin_password)
        reply = self.https("POST", LOGIN_PATH, form, {**LOGIN_HEADERS})
        return bearer(reply.status, reply.body)

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(
            lambda: self.https("GET", "/ready").status == 200, timeout, "/ready 200 through nginx"
        )


def write_env_file(
    path: Path, http_port: int, https_port: int, admin_password: str, **more: str
) -> dict[str, str]:
    return prod_env_file(
        path,
        {
            "DOMAIN": DOMAIN,
            "BASE_URL": f"https://{DOMAIN}:{https_port}",
            "CORS_ORIGINS": f"https://{DOMAIN}:{https_port}",
            "PUBLISH_IP": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "HTTPS_PORT": str(https_port),
            "ADMIN_PASSWORD": admin_password,
            "CREATE_SUPERUSER": "true",
            "CERT_WATCH_INTERVAL": "1",
            "CERTBOT_SERVER": "https://pebble:14000/dir",
            "CERTBOT_RENEW_INTERVAL": "5",
            # certbot waits up to 8 minutes before a due renewal, unless told not to.
            "CERTBOT_RENEW_DELAY": "false",
            "APP_IMAGE": TEST_IMAGE,
            "APP_TAG": "stack",
            "WEB_CONCURRENCY": "2",
            # The overlay's relay, on the internal network: no TLS to speak of there.
            "SMTP_HOST": "mail",
            "SMTP_PORT": "1025",
            "SMTP_SECURITY": "none",
            **more,
        },
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("stack")
    env_file = folder / "env"
    (folder / "pebble-ca").mkdir()
    http_port, https_port = free_port(), free_port()
    admin_password = secrets.token_urlsafe(16)
    values = write_env_file(env_file, http_port, https_port, admin_password)
    stack = Stack(
        f"shipshape-stack-{secrets.token_hex(3)}",
        env_file,
        http_port,
        https_port,
        admin_password,
        folder / "pebble-ca",
        values,
    )
    try:
        stack.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "240", timeout=900)
        yield stack
    finally:
        stack.compose("--profile", "certbot", "down", "--volumes", "--remove-orphans", check=False)


@dataclass
class Load:
    """Clients sending requests through nginx until stopped; every answer is counted."""

    stack: Stack
    requests: list[tuple[str, str]]  # (method, path), sent in turn by every client
    headers: dict[str, str]
    clients: int = 8
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _client(self) -> None:
        connection: http.client.HTTPSConnection | None = None
        turn = 0
        while not self._stop.is_set():
            method, path = self.requests[turn % len(self.requests)]
            turn += 1
            if connection is None:  # one keep-alive connection per client, as browsers do
                connection = http.client.HTTPSConnection(
                    "127.0.0.1", self.stack.https_port, context=self.stack.tls_context(), timeout=30
                )
            body = json.dumps({"title": f"load {turn}"}).encode() if method == "POST" else None
            headers = {"Host": DOMAIN, "Content-Type": "application/json", **self.headers}
            try:
                connection.request(method, path, body=body, headers=headers)
                reply = connection.getresponse()
                answer = reply.read()
                outcome = str(reply.status)
                if reply.status >= 400:  # with what says who answered: nginx or the app
                    self._record_failure(
                        f"{method} {path}: {reply.status} {answer[:160]!r} "
                        f"request id {reply.getheader('X-Request-ID')}"
                    )
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                self._record_failure(f"{method} {path}: {exc!r}")
                connection.close()
                connection = None
            with self._lock:
                self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if connection is not None:
            connection.close()

    def _record_failure(self, what: str) -> None:
        with self._lock:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {what}")
