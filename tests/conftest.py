"""Shared fixtures and the test tiers.

Tiers follow directories: each test gets the marker of its directory under tests/ (see
TIERS), so `pytest -m "not stack"` and the like select by tier. unit/ and fuzz/ are the fast
tier: they run anywhere, on the embedded SQLite default (`make test-fast`). kubernetes/
renders the Helm chart offline (no cluster, no Docker). compose/ needs
the `docker compose` CLI; integration/, container/, stack/, swarm/ and bench/ need the
Docker engine. On a machine without them those are skipped with the reason, but under CI
(CI=true) they fail, so a broken CI machine cannot pass by skipping.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.services.users import ensure_superuser_standalone
from tests.factories import PASSWORD, create_user
from tests.helpers import Headers, in_ci, login, make_settings

TIERS = (
    "unit",
    "fuzz",
    "kubernetes",
    "browser",
    "compose",
    "integration",
    "container",
    "stack",
    "swarm",
    "bench",
    "pods",
)
ENGINE_TIERS = ("integration", "container", "stack", "swarm", "bench", "pods")
CLI_TIERS = ("compose",)
ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def compose_problem() -> str | None:
    """Why `docker compose` cannot render files here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if _run("docker", "compose", "version").returncode != 0:
        return "the docker compose v2 plugin is not installed"
    if _run("docker", "compose", "-f", "/nonexistent/compose.yml", "config").returncode == 0:
        return "`docker compose` exits 0 on errors here (a launcher that drops exit codes)"
    return None


def docker_problem() -> str | None:
    """Why the Docker engine cannot be used here, or None when it can."""
    problem = compose_problem()
    if problem is not None:
        return problem
    try:
        result = _run("docker", "info", "--format", "{{.ServerVersion}}")
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if result.returncode != 0:
        return f"the Docker engine is not reachable: {result.stderr.strip()[:200]}"
    return None


def _tier(item: pytest.Item) -> str | None:
    parts = item.path.relative_to(ROOT / "tests").parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


# The Docker tiers whose files take longest, first: `make test` spreads those tiers' files over
# processes in collection order, so the longest start first and the short ones fill in.
SLOWEST_FIRST = ("stack", "bench", "pods", "integration", "container", "compose")


def _start_order(item: pytest.Item) -> int:
    tier = _tier(item)
    return SLOWEST_FIRST.index(tier) if tier in SLOWEST_FIRST else -1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_start_order)
    problems: dict[str, str | None] = {}
    for item in items:
        tier = _tier(item)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
        if any(item.get_closest_marker(t) for t in ENGINE_TIERS):
            kind = "engine"
        elif any(item.get_closest_marker(t) for t in CLI_TIERS):
            kind = "cli"
        else:
            continue
        if kind not in problems:
            problems[kind] = docker_problem() if kind == "engine" else compose_problem()
        problem = problems[kind]
        if problem is None:
            continue
        if in_ci():
            item.add_marker(pytest.mark.usefixtures("_fail_without_docker"))
            item.user_properties.append(
                ("docker_problem", f"CI=true but Docker is unusable: {problem}")
            )
        else:
            item.add_marker(pytest.mark.skip(reason=f"needs Docker: {problem}"))


@pytest.fixture
def _fail_without_docker(request: pytest.FixtureRequest) -> None:
    reason = dict(request.node.user_properties).get("docker_problem", "Docker is unusable")
    pytest.fail(str(reason), pytrace=False)


# --- environment isolation ---------------------------------------------------------------
@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell must not leak settings (DATABASE_URL, ...) into a test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(f"{name.upper()}_FILE", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "test")
    from app.core.config import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets its own copy."""
    from app.core.config import load_settings
    from app.db.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "app.db"
    upgrade(load_settings(environment="test", database_url=f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def db_path(tmp_path: Path, template_db: Path) -> Path:
    path = tmp_path / "data" / "app.db"
    path.parent.mkdir()
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture
def settings(db_path: Path, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite+aiosqlite:///{db_path}")


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[object]:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


# --- API helpers: a superuser, ordinary users and their auth headers ---------------------


@pytest.fixture
def admin_headers(client: TestClient, settings: Settings) -> Headers:
    asyncio.run(ensure_superuser_standalone(settings))
    return login(client, settings.admin_username, settings.admin_password)


@pytest.fixture
def make_user(client: TestClient, settings: Settings) -> Callable[..., Headers]:
    """A user written to the database (tests/factories.py), logged in: its headers."""

    def make(username: str, password: str = PASSWORD, *, is_superuser: bool = False) -> Headers:
        create_user(settings, username, password=password, is_superuser=is_superuser)
        return login(client, username, password)

    return make
