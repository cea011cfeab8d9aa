"""Static checks of the Dockerfiles, scripts and .dockerignore (no Docker needed):
lint-clean, and the conventions that a build alone would not enforce."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROD = (ROOT / "docker/Dockerfile.prod").read_text()
DEV = (ROOT / "docker/Dockerfile.dev").read_text()
SHELL_SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), *ROOT.glob("docker/*/*.sh")])


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile.prod", "docker/Dockerfile.dev"])
def test_hadolint_is_clean(dockerfile: str) -> None:
    result = run_tool("hadolint", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile.prod", "docker/Dockerfile.dev"])
def test_every_ignored_hadolint_rule_says_why(dockerfile: str) -> None:
    lines = (ROOT / dockerfile).read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            reason = lines[index - 1]
            assert reason.startswith("#"), (dockerfile, index + 1)
            assert "hadolint ignore" not in reason, (
                dockerfile,
                index + 1,
            )


def test_shellcheck_is_clean() -> None:
    result = run_tool("shellcheck", *map(str, SHELL_SCRIPTS), ".ci/run")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_posix_strict_and_documented(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n"), "scripts that run in images are POSIX sh"
    assert "set -o errexit -o nounset" in text
    assert re.search(r"^# Usage: ", text, re.MULTILINE), "usage header"
    assert script.stat().st_mode & 0o111, "executable"


def test_entrypoint_execs_every_long_running_mode() -> None:
    text = (ROOT / "scripts/docker-entrypoint.sh").read_text()
    for mode in ("prod", "dev", "worker", "migrate", "shell"):
        block = text.split(f"    {mode})", 1)[1].split(";;", 1)[0]
        assert "exec " in block, mode
    assert 'exec "$mode" "$@"' in text  # anything else passes through


def test_production_dockerfile_follows_the_conventions() -> None:
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", PROD, re.MULTILINE)
    assert len(stages) >= 3, "multi-stage"
    assert ("${PYTHON_IMAGE}", "base") in stages
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in PROD
    for env in (
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "PIP_NO_CACHE_DIR=1",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
    ):
        assert env in PROD
    assert PROD.index("WORKDIR /app") < PROD.index("COPY ")
    assert "--mount=type=cache,target=/root/.cache/pip" in PROD
    assert "--mount=type=cache,target=/var/cache/apt" in PROD
    assert (
        "pip wheel --no-deps --require-hashes --wheel-dir /wheels -r requirements.lock.txt" in PROD
    )
    assert "--no-index --find-links /wheels" in PROD
    runtime = PROD.split("AS runtime", 1)[1]
    assert runtime.index("pip install") < runtime.index("COPY app/"), "source after dependencies"
    assert "USER 10001:10001" in runtime
    assert "EXPOSE 8000" in runtime
    assert "HEALTHCHECK" in runtime
    assert "curl" not in runtime.split("HEALTHCHECK", 1)[1]
    assert re.search(r'^ENTRYPOINT \["', runtime, re.MULTILINE)
    assert re.search(r'^CMD \["', runtime, re.MULTILINE)
    for arg in (
        "BUILD_VERSION",
        "BUILD_DATE",
        "GIT_COMMIT",
        "SKIP_MEDIA_PACKAGES",
        "WHEELS_SOURCE",
    ):
        assert f"ARG {arg}" in PROD
    assert "AS security-scan" in PROD
    assert "bandit" in PROD
    assert "pip-audit" in PROD
    assert ":latest" not in PROD


def test_dev_dockerfile_has_dev_dependencies_and_reload() -> None:
    assert "uv sync --frozen" in DEV
    assert "--no-dev" not in DEV
    assert 'CMD ["dev"]' in DEV
    assert "USER 10001:10001" in DEV
    assert "EXPOSE 8000" in DEV


def test_dockerignore_covers_the_conventions_list() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    required = {
        ".git/", ".gitignore", "*.md", "docs/", "LICENSE", ".env", ".env.*", ".vscode/", ".idea/",
        "*.swp", "__pycache__/", "*.py[cod]", "*.so", ".Python", "build/", "dist/", "*.egg-info/",
        "venv/", "env/", ".venv/", ".pytest_cache/", ".coverage", "htmlcov/", "*.log", "logs/",
        "Dockerfile*", "docker-compose*.yml", ".dockerignore",
    }  # fmt: skip
    assert required - patterns == set()
    assert "wheels/" not in patterns, "offline builds read ./wheels from the context"
    # Anywhere in the tree, not only at its top; and the secret files never.
    assert {"**/__pycache__/", "**/*.py[cod]", "secrets/"} <= patterns


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile.prod", "docker/Dockerfile.dev"])
def test_package_lists_are_sorted(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    lists = re.findall(r'^ARG [A-Z_]*PACKAGES="([^"]*)"', text, re.M)
    for packages in lists:
        names = packages.split()
        assert names == sorted(names), packages
    if dockerfile.endswith("prod"):
        assert lists  # the production file keeps its package lists in build arguments
