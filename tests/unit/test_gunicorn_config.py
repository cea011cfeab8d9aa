"""The production gunicorn configuration's hooks, run as the master runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from app.db.migrate import head_revision
from tests.docker_utils import ROOT

MASTER = """
import gc, json
import gunicorn_config
from app.main import create_app
app = create_app()  # what preload_app leaves in the master
tracked = len(gc.get_objects())
gunicorn_config.pre_fork(server=None, worker=None)
print(json.dumps({"tracked": tracked, "frozen": gc.get_freeze_count()}))
"""


def _run_as_master(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter, with this environment's settings over the test's."""
    environment = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "ENVIRONMENT": "development",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_preloaded_app_is_frozen_out_of_the_workers_collections(tmp_path: Path) -> None:
    """Before each fork the master moves what it holds into the permanent generation, so a
    worker's full collections never walk the app's objects (measured on the cold items
    page: some 40 % more requests per second, and a shorter p99)."""
    run = _run_as_master(MASTER, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert run.returncode == 0, run.stderr[-2000:]
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts["tracked"] > 50_000, counts
    assert counts["frozen"] >= 0.9 * counts["tracked"], counts


STARTING = """
import json, sys
import gunicorn_config
gunicorn_config.on_starting(server=None)
names = ("alembic", "app.cli", "typer", "uvloop", "sqlalchemy.dialects.sqlite.aiosqlite")
print(json.dumps({name: name in sys.modules for name in names}))
"""


def test_the_database_is_prepared_in_a_child_the_master_keeps_nothing_of(
    tmp_path: Path,
) -> None:
    """The master migrates the database before it listens, but in a forked child: alembic,
    the CLI and what the migrations leave behind never enter the master, whose pages
    every worker shares (6 MB of PSS for master + one worker)."""
    database = tmp_path / "app.db"
    run = _run_as_master(
        STARTING, DATABASE_URL=f"sqlite+aiosqlite:///{database}", RUN_MIGRATIONS="true"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "running migrations" in run.stdout + run.stderr
    with sqlite3.connect(database) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded == {
        **dict.fromkeys(("alembic", "app.cli", "typer"), False),
        # and what every worker imports as it starts is imported once, here, to be shared
        **dict.fromkeys(("uvloop", "sqlalchemy.dialects.sqlite.aiosqlite"), True),
    }, loaded


def test_a_failed_preparation_ends_the_master_with_its_status() -> None:
    """The child's exit status is the master's, as `python -m app prepare`'s would be: an
    unreachable database stops the server before any worker starts."""
    unreachable = {"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db", "DB_WAIT_TIMEOUT": "1"}
    run = _run_as_master(STARTING, **unreachable)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "database not reachable after 1s" in run.stderr
    assert '"alembic"' not in run.stdout  # on_starting never returned
