"""`python -m app` commands, run as a user would run them."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.db.migrate import head_revision

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

COMMANDS = [
    "serve", "migrate", "downgrade", "create-superuser", "check-config", "shell", "jobs",
    "wait-for-db", "prepare", "worker", "worker-ping",
]  # fmt: skip


def sqlite_env(path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite+aiosqlite:///{path}"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_migrate_then_create_superuser_is_idempotent(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "fresh" / "app.db")
    migrated = runner.invoke(cli, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert f"database at {head_revision()}" in migrated.output
    first = runner.invoke(cli, ["create-superuser"], env=env)
    second = runner.invoke(cli, ["create-superuser"], env=env)
    assert first.exit_code == second.exit_code == 0
    assert "superuser admin: created" in first.output
    assert "superuser admin: already exists" in second.output
    assert "CHANGE_ME_DEV_ADMIN_PASSWORD" not in first.output + second.output


@pytest.mark.parametrize(("migrations", "superuser"), [("true", "true"), ("false", "false")])
def test_prepare_does_what_the_settings_ask(
    tmp_path: Path, migrations: str, superuser: str
) -> None:
    env = {
        **sqlite_env(tmp_path / "app.db"),
        "RUN_MIGRATIONS": migrations,
        "CREATE_SUPERUSER": superuser,
    }
    result = runner.invoke(cli, ["prepare"], env=env)
    assert result.exit_code == 0, result.output
    assert "database reachable after" in result.output
    assert (f"database at {head_revision()}" in result.output) is (migrations == "true")
    assert ("superuser admin: created" in result.output) is (superuser == "true")


def test_prepare_and_wait_for_db_log_json_lines_for_the_entrypoint(tmp_path: Path) -> None:
    """The fault: plain "database reachable after 0.0s" lines among the JSON logs of the
    worker and the dev app, whose entrypoint runs these commands."""
    env = {**os.environ, **sqlite_env(tmp_path / "app.db"), "RUN_MIGRATIONS": "true"}
    for command in (["wait-for-db", "--json"], ["prepare", "--json"]):
        result = subprocess.run([sys.executable, "-m", "app", *command], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = (result.stdout + result.stderr).splitlines()
        records = [json.loads(line) for line in lines]  # every line, or this raises
        assert any(r["message"].startswith("database reachable after") for r in records)


def test_prepare_stops_at_a_config_error_before_touching_the_database(tmp_path: Path) -> None:
    env = {**sqlite_env(tmp_path / "app.db"), "ENVIRONMENT": "production", "RUN_MIGRATIONS": "yes"}
    result = runner.invoke(cli, ["prepare"], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("config error: SECRET_KEY is required in production")
    assert not (tmp_path / "app.db").exists()


def test_create_superuser_without_password_in_production_is_a_config_error(tmp_path: Path) -> None:
    env = {
        **sqlite_env(tmp_path / "app.db"),
        "ENVIRONMENT": "production",
        "SECRET_KEY": "x" * 40,
        "JWT_SECRET_KEY": "y" * 40,
    }
    result = runner.invoke(cli, ["create-superuser"], env=env)
    assert result.exit_code == 2
    assert "ADMIN_PASSWORD is required in production" in result.output


def test_check_config_prints_the_redacted_config(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["check-config"], env={"SECRET_KEY": "k" * 40})
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["SECRET_KEY"] == "********"
    assert "k" * 40 not in result.output


def test_check_config_fails_with_the_reason() -> None:
    result = runner.invoke(cli, ["check-config"], env={"ENVIRONMENT": "production"})
    assert result.exit_code == 2
    assert result.output.strip() == (
        "config error: SECRET_KEY is required in production: set SECRET_KEY or SECRET_KEY_FILE"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [("ADMIN_PASSWORD", "short", "ADMIN_PASSWORD: String should have at least 8 characters"),
     ("ADMIN_PASSWORD", "two\nlines", "ADMIN_PASSWORD: Value error, must not contain control"),
     ("ADMIN_USERNAME", "no spaces", "ADMIN_USERNAME: String should match pattern")],
)  # fmt: skip
def test_the_superuser_is_held_to_the_rules_of_every_user(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    """One rule, the schema's: the CLI checked the admin password's length on its own, and
    not its other rules (a line break, a username with spaces)."""
    env = {**sqlite_env(tmp_path / "app.db"), variable: value}
    assert runner.invoke(cli, ["migrate"], env=env).exit_code == 0
    result = runner.invoke(cli, ["create-superuser"], env=env)
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"config error: {message}")


def test_config_error_is_one_line_not_a_traceback() -> None:
    result = runner.invoke(cli, ["migrate"], env={"PORT": "not-a-port"})
    assert result.exit_code == 2
    assert result.output.strip().startswith("config error: PORT:")
    assert "Traceback" not in result.output


def test_database_error_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = runner.invoke(cli, ["migrate"], env=sqlite_env(blocker / "app.db"))
    assert result.exit_code in (1, 2)
    assert "Traceback" not in result.output
    assert result.output.count("\n") <= 2


def test_shell_runs_a_command(tmp_path: Path) -> None:
    result = runner.invoke(
        cli,
        ["shell", "-c", "print(settings.app_name, models.Item.__tablename__)"],
        env=sqlite_env(tmp_path / "app.db"),
    )
    assert result.exit_code == 0, result.output
    assert "Shipshape items" in result.output
    assert logging.root.manager.disable == logging.NOTSET  # the shell's quiet ends with it


SHELL_QUERIES = """
from sqlalchemy import text
async def count():
    async with db.session() as session:
        return (await session.execute(text("SELECT count(*) FROM users"))).scalar_one()

print("users:", run(count()), run(count()))
"""


def test_the_shell_runs_one_query_after_another_on_one_event_loop(tmp_path: Path) -> None:
    """The fault: a second `run(...)` raised "Event loop is closed" (asyncio.run made and
    closed a loop per call while the pool kept its connections)."""
    env = {**sqlite_env(tmp_path / "app.db"), "LOG_LEVEL": "debug"}
    assert runner.invoke(cli, ["migrate"], env=env).exit_code == 0
    result = subprocess.run(
        [sys.executable, "-m", "app", "shell"], input=SHELL_QUERIES + "\n",
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "users: 0 0" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # Quiet: no debug or info log lines between the prompts, even at LOG_LEVEL=debug.
    assert '"level":"debug"' not in result.stderr + result.stdout
    assert '"level":"info"' not in result.stderr + result.stdout


def test_an_error_in_the_shell_carries_no_unrelated_traceback(tmp_path: Path) -> None:
    """The fault: every traceback in the shell ended in "No module named 'IPython'" (the
    shell ran inside the handler of that ImportError)."""
    result = subprocess.run(
        [sys.executable, "-m", "app", "shell"], input="1/0\n",
        env={**os.environ, **sqlite_env(tmp_path / "app.db")}, cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "ZeroDivisionError" in result.stderr
    assert "IPython" not in result.stderr


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "app.db")
    assert runner.invoke(cli, ["migrate"], env=env).exit_code == 0
    from app.db.migrate import head_revision

    head = int(head_revision() or 0)
    # A relative target reports the revision it reached, not "-1".
    one = runner.invoke(cli, ["downgrade", "--", "-1"], env=env)  # as `make downgrade` runs it
    assert one.exit_code == 0, one.output
    assert one.output.strip().splitlines()[-1] == f"database downgraded to {head - 1:04d}"
    down = runner.invoke(cli, ["downgrade", "base"], env=env)
    assert down.exit_code == 0, down.output
    assert down.output.strip().splitlines()[-1] == "database downgraded to base (no revision)"
    assert runner.invoke(cli, ["migrate"], env=env).exit_code == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_answers_ready_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """What `make run` does, in one process: migrate, create the superuser, serve on
    127.0.0.1, /ready 200, SIGTERM ends it."""
    port = _free_port()
    env = {**os.environ, **sqlite_env(tmp_path / "app.db"), "ENVIRONMENT": "development"}
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--prepare", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Eventually: how fast it starts is the benchmark's to judge (`make bench`), not this
        # test's, which a busy machine must pass.
        deadline = started + 60
        status = None
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/ready")
                break
            except OSError:
                time.sleep(0.1)  # polling interval; the deadline is what bounds the wait
        assert status == 200, f"/ready not 200 within 60 s of start: {status}"
        assert body["checks"]["database"]["status"] == "ok"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    # uvicorn re-raises the signal once shut down, so the exit status says "ended by SIGTERM"
    assert server.returncode in (0, -signal.SIGTERM), output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(records) == len([line for line in output.splitlines() if line.strip()]), output
    assert any(
        r["message"] == "starting" and r["config"]["SECRET_KEY"] == "********" for r in records
    )
    assert any(r["message"] == "stopped" for r in records)
    prepared = [r["message"] for r in records if r["logger"] == "app.prepare"]
    assert prepared == ["database at " + (head_revision() or ""), "superuser admin: created"]


def test_worker_without_a_broker_says_so() -> None:
    result = runner.invoke(cli, ["worker"])
    assert result.exit_code == 2
    assert "no broker configured" in result.output
