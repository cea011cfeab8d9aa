"""The compose and stack files, parsed: no secret is written in them, and every overlay hands
its env file to each service that runs the app's image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.config import Settings, is_secret
from tests.docker_utils import ROOT

COMPOSE_FILES = sorted(
    [
        *ROOT.glob("docker-compose*.yml"),
        *ROOT.glob("docker-stack*.yml"),
        *ROOT.glob("tests/*/*.yml"),
    ]
)
OVERLAY_ENV_FILES = {"docker-compose.dev.yml": ".env.dev", "docker-compose.prod.yml": ".env.prod"}

SETTINGS_SECRETS = {name.upper() for name, f in Settings.model_fields.items() if is_secret(f)}
# Names that hold a secret whatever service reads them (POSTGRES_PASSWORD, a tool's token).
_SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)$")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?\}", re.DOTALL)


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _from_the_environment_only(value: str) -> bool:
    """`${VAR}` or `${VAR:?message}`, or a default that is itself such a variable: the value
    comes from the env file or the shell, never from this file."""
    match = _INTERPOLATION.fullmatch(value)
    if match is None:
        return value == ""  # the name alone: passed through from compose's environment
    operator, rest = match.group(2), match.group(3)
    if operator is None or operator.endswith("?"):
        return True  # no default, or an error message when unset
    return _from_the_environment_only(rest)


def _is_secret_name(name: str) -> bool:
    return not name.endswith("_FILE") and (
        name in SETTINGS_SECRETS or bool(_SECRET_NAME.search(name))
    )


def _written_secrets(path: Path) -> list[str]:
    found = []
    for name, service in (_load(path).get("services") or {}).items():
        build = service.get("build")
        args = build.get("args") or {} if isinstance(build, dict) else {}
        values = {**_environment(service), **{k: str(v) for k, v in dict(args).items()}}
        for key, value in values.items():
            if _is_secret_name(key) and not _from_the_environment_only(value):
                found.append(f"{name}: {key}={value}")
    return found


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_is_written_in_a_compose_file(path: Path) -> None:
    assert _written_secrets(path) == []


def test_a_secret_written_in_a_compose_file_is_found(tmp_path: Path) -> None:
    """The check above, shown to fail on what it looks for."""
    written = tmp_path / "docker-compose.yml"
    written.write_text(
        "services:\n"
        "  app:\n"
        "    environment:\n"
        "      SECRET_KEY: hard-coded\n"
        "      JWT_SECRET_KEY: ${JWT_SECRET_KEY:-a-default-is-a-value}\n"
        "      DB_PASSWORD: ${DB_PASSWORD:?required}\n"
        "  db:\n"
        "    environment:\n"
        "      - POSTGRES_PASSWORD=${A:-${B:-literal}}\n"
        "      - PGADMIN_DEFAULT_PASSWORD=${A:-${B:?required}}\n"
    )
    assert _written_secrets(written) == [
        "app: SECRET_KEY=hard-coded",
        "app: JWT_SECRET_KEY=${JWT_SECRET_KEY:-a-default-is-a-value}",
        "db: POSTGRES_PASSWORD=${A:-${B:-literal}}",
    ]


def _app_services() -> set[str]:
    services = _load(ROOT / "docker-compose.yml")["services"]
    return {
        name for name, s in services.items() if str(s.get("image", "")).startswith("${APP_IMAGE")
    }


@pytest.mark.parametrize("overlay", sorted(OVERLAY_ENV_FILES))
def test_every_overlay_hands_its_env_file_to_the_app_services(overlay: str) -> None:
    """One env file per environment is the single source of truth: the overlay gives it to
    every service that runs the app's image (`ENV_FILE` may point elsewhere)."""
    services = _load(ROOT / overlay)["services"]
    expected = [f"${{ENV_FILE:-{OVERLAY_ENV_FILES[overlay]}}}"]
    assert _app_services() == {"app", "worker"}
    given = {name: services.get(name, {}).get("env_file") for name in _app_services()}
    assert given == dict.fromkeys(_app_services(), expected)
