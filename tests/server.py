"""The service as a real process on 127.0.0.1, for tests that attack or measure it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import Settings, load_settings
from tests.docker_utils import ROOT, wait_until
from tests.factories import create_user
from tests.helpers import LOGIN_HEADERS, LOGIN_PATH, bearer, login_form
from tools.docker import free_port, terminate


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    admin_password: str
    settings: Settings  # the server's database, for the factories

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.base_url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def login(self, username: str, password: str) -> dict[str, str]:
        status, body = self.request(
            "POST", LOGIN_PATH, login_form(username, password), LOGIN_HEADERS
        )
        return bearer(status, json.dumps(body))

    def create_user(self, username: str, password: str) -> dict[str, str]:
        """A user written to the server's database (tests/factories.py), logged in."""
        create_user(self.settings, username, password=password)
        return self.login(username, password)


@contextlib.contextmanager
def serve(tmp_path: Path, **settings: str) -> Iterator[Server]:
    """`python -m app serve` (uvicorn, one process) on a migrated database of its own, with
    the ADMIN_* superuser; stopped with SIGTERM afterwards."""
    port = free_port()
    password = "fuzz-admin-password-0"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "DATABASE_"))},
        "ENVIRONMENT": "test",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "UPLOADS_DIR": str(tmp_path / "uploads"),
        "STORAGE_DIR": str(tmp_path / "storage"),
        "ADMIN_PASSWORD": password,
        "PASSWORD_HASH_MEMORY_KIB": "64",
        "PASSWORD_HASH_TIME_COST": "1",
        "WEBHOOK_BACKOFF_SECONDS": "0",
        **settings,
    }
    for command in ("migrate", "create-superuser"):
        subprocess.run(
            [sys.executable, "-m", "app", command], env=env, cwd=ROOT, check=True,
            capture_output=True, timeout=60,
        )  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    database = load_settings(
        environment="test", database_url=env["DATABASE_URL"], password_hash_memory_kib=64,
        password_hash_time_cost=1,
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", process, log, password, database)
    try:
        wait_until(lambda: _ready(server), 30, "the server's /ready")
        yield server
    finally:
        terminate(process, timeout=15)


def _ready(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"the server exited:\n{server.log.read_text()[-3000:]}")
    try:
        return server.request("GET", "/ready")[0] == 200
    except OSError:
        return False


def memory(pid: int, field: str = "VmRSS") -> int:
    """Bytes of a process's resident memory (VmRSS) or of its peak so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def largest_import(rows: int = 100_000) -> bytes:
    """A CSV at the default IMPORT_MAX_ROWS, close to the default IMPORT_MAX_BYTES (4.2 MB)."""
    lines = (b"item number %07d,a description %07d\n" % (n, n) for n in range(rows))
    return b"title,description\n" + b"".join(lines)


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file; (body, content type)."""
    boundary = f"shipshape{os.getpid()}"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )
