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


SETTINGS = """
import json
import gunicorn_config as g
names = ("bind", "workers", "worker_class", "timeout", "graceful_timeout", "keepalive",
         "max_requests", "max_requests_jitter", "preload_app", "worker_tmp_dir", "loglevel",
         "forwarded_allow_ips", "control_socket_disable", "accesslog")
print(json.dumps({name: getattr(g, name) for name in names}))
"""


def test_every_server_setting_comes_from_the_environment(tmp_path: Path) -> None:
    """What the image's server runs with, from the settings of the environment; the Docker
    tier checks that the running server applies them."""
    run = _run_as_master(
        SETTINGS, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", HOST="127.0.0.2",
        PORT="8123", WEB_CONCURRENCY="3", WORKER_TIMEOUT="41", GRACEFUL_TIMEOUT="17",
        KEEPALIVE="7", MAX_REQUESTS="999", MAX_REQUESTS_JITTER="55", LOG_LEVEL="warning",
        FORWARDED_ALLOW_IPS="10.0.0.1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {
        "bind": "127.0.0.2:8123", "workers": 3,
        "worker_class": "app.core.server.DrainingUvicornWorker", "timeout": 41,
        "graceful_timeout": 17, "keepalive": 7, "max_requests": 999, "max_requests_jitter": 55,
        "preload_app": True, "worker_tmp_dir": "/dev/shm", "loglevel": "warning",
        "forwarded_allow_ips": "10.0.0.1", "control_socket_disable": True, "accesslog": None,
    }  # fmt: skip


def test_without_a_worker_count_it_follows_the_cpus_up_to_the_ceiling(tmp_path: Path) -> None:
    code = "import json, gunicorn_config as g; print(json.dumps([g.workers, g.cpus]))"
    database = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    for ceiling in ("2", "64"):
        run = _run_as_master(code, DATABASE_URL=database, WEB_CONCURRENCY="0", MAX_WORKERS=ceiling)
        assert run.returncode == 0, run.stderr[-2000:]
        workers, cpus = json.loads(run.stdout.strip().splitlines()[-1])
        assert workers == min(2 * cpus + 1, int(ceiling)), (ceiling, cpus)
