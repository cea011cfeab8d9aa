"""scripts/healthcheck.py, the image's HEALTHCHECK: healthy once ready, then while alive.

The fault: it checked /live only, so a Swarm rolling update of a build whose /ready never
answered 200 went through to the end (3,827 of 3,827 /ready answers 503 afterwards)."""

from __future__ import annotations

import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

from tests.helpers import http_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "healthcheck.py"


class App(BaseHTTPRequestHandler):
    status: ClassVar[dict[str, int]] = {}
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        self.send_response(self.status.get(self.path, 404))
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def check(port: int, tmp: Path) -> int:
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "TMPDIR": str(tmp)}
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, timeout=30, check=False
    ).returncode


def test_a_container_is_healthy_once_ready_and_then_while_it_is_alive(tmp_path: Path) -> None:
    with http_server(App) as server:
        port = server.server_address[1]
        App.status.update({"/live": 200, "/ready": 503})
        assert check(port, tmp_path) == 1  # alive, not ready yet: not healthy
        assert App.asked == ["/ready"]
        App.status["/ready"] = 200
        assert check(port, tmp_path) == 0
        App.status["/ready"] = 503  # the database went away later: no restart for that
        assert check(port, tmp_path) == 0
        assert App.asked[-1] == "/live"
        App.status["/live"] = 500
        assert check(port, tmp_path) == 1
        # A new container (an empty /tmp) must be ready again.
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        App.status["/live"] = 200
        assert check(port, fresh) == 1
