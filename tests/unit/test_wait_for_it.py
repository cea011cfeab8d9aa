"""scripts/wait-for-it.sh: waits for a TCP port, then execs the command; times out clearly."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import tools_folder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "wait-for-it.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=90,
                          check=False, env=env)  # fmt: skip


def only_tools(tmp_path: Path, nc: str | None = None) -> dict[str, str]:
    """A PATH with the script's tools and Python, and `nc` only when given (a shell
    script's body): without it the Python probe answers, as in an image without nc."""
    fakes = {} if nc is None else {"nc": nc}
    tools = ("sh", "sed", "date", "sleep", "python3")
    return {"PATH": tools_folder(tmp_path / "bin", tools, **fakes)}


def test_an_open_port_runs_the_command() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = run(f"127.0.0.1:{port}", "-t", "5", "--", "echo", "started")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


@pytest.mark.parametrize("probe", ["default", "python"])
def test_the_command_runs_only_once_a_late_port_opens(tmp_path: Path, probe: str) -> None:
    """The command must find the port open: a wait that returns at once (or whose loop
    checks nothing) runs it against a closed port, and it fails. With nc where the machine
    has it, and always with the Python probe."""
    import sys
    import threading

    env = only_tools(tmp_path) if probe == "python" else None

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        opening = threading.Timer(2.0, server.listen)
        opening.start()
        try:
            check = f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"
            command = ("--", sys.executable, "-c", check)
            result = run(f"127.0.0.1:{port}", "-t", "60", *command, env=env)
        finally:
            opening.cancel()
    assert result.returncode == 0, result.stderr
    assert f"waiting up to 60s for 127.0.0.1:{port}" in result.stderr
    assert re.search(rf"127.0.0.1:{port} is open after [1-9]\d*s", result.stderr)


def test_a_closed_port_times_out_with_a_message() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        result = run(f"127.0.0.1:{port}", "-t", "1", "--", "echo", "must not run")
    assert result.returncode == 1
    assert f"127.0.0.1:{port} did not open within 1s" in result.stderr
    assert "must not run" not in result.stdout


def test_bad_arguments_print_the_usage() -> None:
    result = run("127.0.0.1:1", "-t", "soon")
    assert result.returncode == 2
    assert "timeout must be whole seconds" in result.stderr


def test_the_wait_ends_at_its_timeout_counted_in_probes(tmp_path: Path) -> None:
    """About one probe a second until the timeout, then the message and exit 1: counted in
    probes (an nc that records each call and refuses), not in seconds, so a slow machine
    only ever makes fewer of them."""
    calls = tmp_path / "calls"
    env = only_tools(tmp_path, nc=f"echo probe >> {calls}\nexit 1")
    result = run("db:5432", "-t", "3", "--", "echo", "must not run", env=env)
    assert result.returncode == 1
    assert "db:5432 did not open within 3s" in result.stderr
    assert "must not run" not in result.stdout
    assert 1 <= len(calls.read_text().splitlines()) <= 5
