"""The .env.*.example files and the Settings class document the same variables."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest

from app.core.config import ConfigError, Settings, is_secret, load_settings
from tests.helpers import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [".env.dev.example", ".env.staging.example", ".env.prod.example"]
COMPOSE_SECTION = "# Compose and deployment"
ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")

FIELDS = {name.upper() for name in Settings.model_fields}
# Stamped into the image by its build: documented, but commented out in the env files,
# whose values would override the image's (env_file wins over the image's ENV).
BUILD_STAMPED = {"BUILD_VERSION", "GIT_COMMIT"}
SECRETS = {name.upper() for name, f in Settings.model_fields.items() if is_secret(f)}
REQUIRED_IN_STRICT = {"SECRET_KEY", "JWT_SECRET_KEY", "DB_PASSWORD", "ADMIN_PASSWORD"}


def parse(name: str) -> tuple[dict[str, str], set[str], set[str], list[str]]:
    """(service variables, commented _FILE forms, compose-only variables, lines)."""
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    service: dict[str, str] = {}
    commented: set[str] = set()
    compose: set[str] = set()
    in_compose = False
    for line in lines:
        if line.startswith(COMPOSE_SECTION):
            in_compose = True
        match = ASSIGNMENT.match(line)
        if not match:
            continue
        is_comment, var, value = match.groups()
        if is_comment:
            commented.add(var)
        elif in_compose:
            compose.add(var)
        else:
            service[var] = value
    return service, commented, compose, lines


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_setting_is_in_the_example_and_nothing_else(name: str) -> None:
    service, _, _, _ = parse(name)
    assert FIELDS - BUILD_STAMPED - service.keys() == set(), f"settings missing from {name}"
    assert BUILD_STAMPED & service.keys() == set(), f"{name} would hide the image's build stamp"
    assert service.keys() - FIELDS == set(), f"{name} documents variables the service does not read"


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_secret_documents_its_file_form(name: str) -> None:
    _, commented, _, _ = parse(name)
    assert commented == {f"{s}_FILE" for s in SECRETS} | BUILD_STAMPED


@pytest.mark.parametrize("name", EXAMPLES)
def test_compose_only_variables_are_not_settings(name: str) -> None:
    _, _, compose, _ = parse(name)
    assert compose & FIELDS == set()


@pytest.mark.parametrize("name", [".env.staging.example", ".env.prod.example"])
def test_required_values_are_marked_required(name: str) -> None:
    _, _, compose, lines = parse(name)
    required = REQUIRED_IN_STRICT | {"DOMAIN", "SSL_EMAIL"}
    for var in required:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{var}="))
        assert "REQUIRED" in lines[index - 1], f"{name}: the comment above {var} must say REQUIRED"
    assert {"DOMAIN", "SSL_EMAIL"} <= compose


def _load_into_env(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    service, _, _, _ = parse(name)
    for var, value in service.items():
        monkeypatch.setenv(var, value)


def test_dev_example_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    _load_into_env(monkeypatch, ".env.dev.example")
    settings = load_settings()
    assert settings.sqlalchemy_url.startswith("postgresql+asyncpg://shipshape:")
    assert settings.resolved_redis_url == "redis://:CHANGE_ME_DEV_REDIS_PASSWORD@redis:6379/0"


@pytest.mark.parametrize("name", [".env.staging.example", ".env.prod.example"])
def test_strict_examples_hold_no_secret_and_work_with_the_secret_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    service, _, _, _ = parse(name)
    assert {var: service[var] for var in SECRETS if service[var]} == {}
    _load_into_env(monkeypatch, name)
    with pytest.raises(ConfigError, match=r"SECRET_KEY is required .* SECRET_KEY_FILE"):
        load_settings()
    # As the production stack runs it: each secret a file, named by X_FILE.
    for var in ("SECRET_KEY", "JWT_SECRET_KEY", "DB_PASSWORD", "REDIS_PASSWORD"):
        (tmp_path / var).write_text(secrets.token_hex(32) + "\n")
        monkeypatch.setenv(f"{var}_FILE", str(tmp_path / var))
    settings = load_settings()
    assert settings.sqlalchemy_url.startswith("postgresql+asyncpg://shipshape:")
    assert settings.db_password == (tmp_path / "DB_PASSWORD").read_text().strip()


def test_env_files_are_ignored_by_git_and_examples_are_not() -> None:
    if not (ROOT / ".git").exists():
        skip_or_fail_in_ci("not a git checkout")
    # Any env file, whatever its suffix (a rule listing names misses the next one), in any
    # folder; the examples never.
    env_files = {".env", ".env.dev", ".env.staging", ".env.prod", ".env.local", ".env.test",
                 ".env.prod.backup", "deploy/.env", "deploy/.env.prod"}  # fmt: skip
    result = subprocess.run(["git", "check-ignore", "--no-index", *env_files, *EXAMPLES],
                            cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    assert set(result.stdout.split()) == env_files


def test_gitignore_keeps_secrets_data_and_tool_output_out_of_the_repository() -> None:
    if not (ROOT / ".git").exists():
        skip_or_fail_in_ci("not a git checkout")
    ignored = {
        "secrets/prod/db_password", "secrets/staging/secret_key", "data/app.db",
        "data/secret_key", "uploads/import.csv", "storage/export.csv", "wheels/x.whl",
        "app/__pycache__/main.cpython-311.pyc", "tests/unit/__pycache__/x.pyc", "app/x.pyo",
        ".venv/bin/python", ".tools/bin/uv", ".coverage", ".coverage.host.1.2",
        "htmlcov/index.html", ".pytest_cache/v", ".mypy_cache/x", "dist/x.tar.gz",
    }  # fmt: skip
    kept = {
        ".env.dev.example", ".env.prod.example", "app/main.py", "docs/operations.md",
        "scripts/backup.sh", "docker-compose.yml", "tests/unit/test_env_examples.py",
        "deploy/helm/shipshape/values.yaml", ".gitignore", ".dockerignore",
    }  # fmt: skip
    result = subprocess.run(["git", "check-ignore", "--no-index", *ignored, *kept], cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert set(result.stdout.split()) == ignored


def test_wheels_are_ignored_by_git() -> None:
    """A downloaded wheel (a 2.9 MB profiler was once committed) stays out of the history."""
    if not (ROOT / ".git").exists():
        skip_or_fail_in_ci("not a git checkout")
    names = ["py_spy-0.4.0-py2.py3-none-manylinux_2_5_x86_64.whl", "tools/x-1.0-py3-none-any.whl"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert set(result.stdout.split()) == set(names)


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_can_be_sourced_by_a_shell(name: str) -> None:
    """`make deploy` and `make secrets` read the env file with `.`: a `;` or an unquoted
    space in a value would run as a command there."""
    import subprocess

    result = subprocess.run(
        ["sh", "-c", f"set -a && . ./{name} && set +a && echo sourced"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "sourced\n")
