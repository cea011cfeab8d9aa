"""Static checks of the Dockerfiles, scripts and .dockerignore (no Docker needed): the
conventions that a build alone would not enforce. The Dockerfiles are parsed, not searched
as text: a comment never satisfies a check. (hadolint and shellcheck run in `make lint`.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import Instruction, dockerfile

ROOT = Path(__file__).resolve().parents[2]
PROD = dockerfile(ROOT / "docker/Dockerfile.prod")
DEV = dockerfile(ROOT / "docker/Dockerfile.dev")
SHELL_SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), *ROOT.glob("docker/*/*.sh")])


def values(instructions: list[Instruction], keyword: str, stage: str | None = None) -> list[str]:
    return [i.value for i in instructions if i.keyword == keyword and stage in (None, i.stage)]


def assignments(instructions: list[Instruction], keyword: str) -> dict[str, str]:
    """NAME=value pairs of every ENV (or ARG) instruction, later ones winning."""
    pairs: dict[str, str] = {}
    for value in values(instructions, keyword):
        for word in shlex.split(value):
            name, _, default = word.partition("=")
            pairs[name] = default
    return pairs


def runs(instructions: list[Instruction], stage: str | None = None) -> list[Instruction]:
    return [i for i in instructions if i.keyword == "RUN" and stage in (None, i.stage)]


@pytest.mark.parametrize("path", ["docker/Dockerfile.prod", "docker/Dockerfile.dev"])
def test_every_ignored_hadolint_rule_says_why(path: str) -> None:
    lines = (ROOT / path).read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            reason = lines[index - 1]
            assert reason.startswith("#"), (path, index + 1)
            assert "hadolint ignore" not in reason, (path, index + 1)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_posix_strict_and_documented(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n"), "scripts that run in images are POSIX sh"
    assert re.search(r"^set -o errexit -o nounset", text, re.MULTILINE)
    assert re.search(r"^# Usage: ", text, re.MULTILINE), "usage header"
    assert script.stat().st_mode & 0o111, "executable"


def test_entrypoint_execs_every_long_running_mode() -> None:
    text = (ROOT / "scripts/docker-entrypoint.sh").read_text()
    code = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    for mode in ("prod", "dev", "worker", "migrate", "shell"):
        block = code[code.index(f"{mode})") :]
        block = block[: block.index(";;")]
        assert any(line.startswith("exec ") for line in block), mode
    assert 'exec "$mode" "$@"' in code  # anything else passes through


def test_production_dockerfile_follows_the_conventions() -> None:
    stages = [value.split() for value in values(PROD, "FROM")]
    assert len(stages) >= 3, "multi-stage"
    assert ["python:3.11-slim", "AS", "base"] in stages
    env = assignments(PROD, "ENV")
    for name in (
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    ):
        assert env[name] == "1", name
    keywords = [i.keyword for i in PROD]
    assert keywords.index("WORKDIR") < keywords.index("COPY")
    assert values(PROD, "WORKDIR", "base") == ["/app"]
    builder = runs(PROD, "wheels-build")
    assert "--mount=type=cache,target=/var/cache/apt,sharing=locked" in builder[0].flags
    wheels = builder[1]
    assert "--mount=type=cache,target=/root/.cache/pip" in wheels.flags
    assert wheels.command.startswith(
        "python -m pip wheel --no-deps --require-hashes --wheel-dir /wheels"
        " -r requirements.lock.txt"
    )
    runtime = [i for i in PROD if i.stage == "runtime"]
    install = next(i for i in runtime if "pip install" in i.command)
    assert "--find-links /wheels" in install.command
    assert "--no-index" in install.command
    source = next(i for i in runtime if i.keyword == "COPY" and i.value.startswith("app/"))
    assert runtime.index(install) < runtime.index(source), "source after dependencies"
    assert values(runtime, "USER") == ["10001:10001"]
    assert values(runtime, "EXPOSE") == ["8000"]
    (healthcheck,) = values(runtime, "HEALTHCHECK")
    assert "curl" not in healthcheck
    assert values(runtime, "ENTRYPOINT")[0].startswith('["')
    assert values(runtime, "CMD")[0].startswith('["')
    args = assignments(PROD, "ARG")
    for arg in (
        "BUILD_VERSION",
        "BUILD_DATE",
        "GIT_COMMIT",
        "SKIP_MEDIA_PACKAGES",
        "WHEELS_SOURCE",
    ):
        assert arg in args, arg
    scan = " ".join(i.command for i in runs(PROD, "security-scan"))
    # The scanners run (installed is not enough): bandit over the app, pip-audit over the
    # locked requirements.
    assert re.search(r"&& bandit --recursive [^&]* app\b", scan)
    assert "pip-audit --requirement requirements.lock.txt" in scan
    assert not any(":latest" in value for value in values(PROD, "FROM"))


def test_dev_dockerfile_has_dev_dependencies_and_reload() -> None:
    assert values(DEV, "FROM") == ["python:3.11-slim"]
    sync = next(i.command for i in runs(DEV) if i.command.startswith("uv sync"))
    assert "--frozen" in sync
    assert "--no-dev" not in sync
    assert values(DEV, "CMD") == ['["dev"]']
    assert values(DEV, "USER") == ["10001:10001"]
    assert values(DEV, "EXPOSE") == ["8000"]


@pytest.mark.parametrize("path", ["docker/Dockerfile.prod", "docker/Dockerfile.dev"])
def test_apt_updates_installs_and_cleans_up_in_one_run(path: str) -> None:
    """Update, install and the cleanup of the package lists in the same RUN: a separate
    `apt-get update` layer would be cached and installs would read stale lists; lists left
    in a layer are 20+ MB. A cache mount of /var/lib/apt keeps them out of the image too."""
    for run in runs(dockerfile(ROOT / path)):
        if "apt-get install" not in run.command:
            assert "apt-get update" not in run.command
            continue
        assert run.command.index("apt-get update") < run.command.index("apt-get install")
        assert "--no-install-recommends" in run.command
        cached = any(f.startswith("--mount=type=cache,target=/var/lib/apt") for f in run.flags)
        assert cached or "rm -rf /var/lib/apt/lists/*" in run.command


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
    # No stray wheel in a build context; the wheelhouse's are re-included after that rule.
    assert lines.index("!wheels/*.whl") > lines.index("**/*.whl")
    # Anywhere in the tree, not only at its top; and the secret files never.
    assert {"**/__pycache__/", "**/*.py[cod]", "secrets/"} <= patterns


@pytest.mark.parametrize("path", ["docker/Dockerfile.prod", "docker/Dockerfile.dev"])
def test_package_lists_are_sorted(path: str) -> None:
    args = assignments(dockerfile(ROOT / path), "ARG")
    lists = [value for name, value in args.items() if name.endswith("PACKAGES")]
    for packages in lists:
        names = packages.split()
        assert names == sorted(names), packages
    if path.endswith("prod"):
        assert lists  # the production file keeps its package lists in build arguments


@pytest.mark.parametrize("instructions", [PROD, DEV], ids=["prod", "dev"])
def test_every_base_image_is_named_where_dependabot_reads_it(
    instructions: list[Instruction],
) -> None:
    """Dependabot's docker ecosystem updates `FROM image:tag` lines and resolves no ARG in
    them (dependabot-core#2057): a base image given as `FROM ${ARG}` is never updated. An ARG
    may only choose between the file's own stages (`FROM wheels-${WHEELS_SOURCE}`)."""
    stages = {"scratch"}
    for value in values(instructions, "FROM"):
        words = [word for word in value.split() if not word.startswith("--")]
        image = words[0]
        if "$" in image:
            prefix = image.split("$", 1)[0]
            assert prefix, f"FROM {value}"
            assert any(s.startswith(prefix) for s in stages), f"FROM {value}"
        elif image not in stages:
            assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", image), image
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])


def test_the_benchmarks_run_the_server_with_the_images_allocator_setting(tmp_path: Path) -> None:
    """The benchmarks start gunicorn outside the image: they must measure the memory the
    image's process uses, so they set glibc's mmap threshold as the image does."""
    from bench.servers import gunicorn_env

    setting = "MALLOC_MMAP_THRESHOLD_"
    assert gunicorn_env(8000, tmp_path)[setting] == assignments(PROD, "ENV")[setting]
