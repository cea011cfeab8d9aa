"""The database service's Postgres is sized for its container: its memory settings follow the
container's memory limit, pg_stat_statements is loaded and slow statements are logged (the
entrypoint the compose and Swarm stacks run, docker/postgres/postgres-entrypoint.sh)."""

from __future__ import annotations

import pytest

from tests.docker_utils import ROOT, docker, running, wait_until

SCRIPT = ROOT / "docker" / "postgres" / "postgres-entrypoint.sh"
SETTINGS = (
    "shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem",
    "shared_preload_libraries", "log_min_duration_statement",
)  # fmt: skip


def _settings(container_id: str) -> dict[str, str]:
    names = ", ".join(f"'{name}'" for name in SETTINGS)
    query = f"SELECT name, current_setting(name) FROM pg_settings WHERE name IN ({names})"
    out = docker("exec", container_id, "psql", "-U", "postgres", "-AtF=", "-c", query).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize(
    ("memory", "env", "expected"),
    [
        ("512m", {}, {"shared_buffers": "128MB", "effective_cache_size": "384MB",
                      "maintenance_work_mem": "32MB", "work_mem": "4MB",
                      "log_min_duration_statement": "500ms"}),
        ("4g", {"DB_LOG_MIN_DURATION_MS": "250"},
         {"shared_buffers": "1GB", "effective_cache_size": "3GB", "maintenance_work_mem": "256MB",
          "work_mem": "16MB", "log_min_duration_statement": "250ms"}),
    ],
)  # fmt: skip
def test_postgres_follows_its_memory_limit(
    memory: str, env: dict[str, str], expected: dict[str, str]
) -> None:
    options = (
        "--memory", memory, "--entrypoint", "/bin/sh",
        "--volume", f"{SCRIPT}:/opt/shipshape/postgres-entrypoint.sh:ro",
    )  # fmt: skip
    with running(
        "postgres:15-alpine",
        "/opt/shipshape/postgres-entrypoint.sh",
        env={"POSTGRES_PASSWORD": "tuning-test", **env},
        options=options,
        publish=False,
    ) as db:
        wait_until(
            lambda: (
                docker("exec", db.id, "pg_isready", "-U", "postgres", check=False).returncode == 0
            ),
            60,
            "Postgres to accept connections",
        )
        found = wait_until(lambda: _settings(db.id) or None, 60, "the settings to be readable")
        statements = docker(
            "exec", db.id, "psql", "-U", "postgres", "-Atc",
            "CREATE EXTENSION pg_stat_statements; SELECT count(*) > 0 FROM pg_stat_statements",
        ).stdout  # fmt: skip
    assert found == {**expected, "shared_preload_libraries": "pg_stat_statements"}
    assert statements.strip().splitlines()[-1] == "t"
