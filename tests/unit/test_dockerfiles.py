"""Static checks of the Dockerfiles, scripts and .dockerignore (no Docker needed): the
conventions that a build alone would not enforce. The Dockerfiles are parsed, not searched
as text: a comment never satisfies a check. (hadolint and shellcheck run in `make lint`.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Instruction, dockerfile, tools_folder

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
    execs = {
        "prod": 'exec gunicorn --config /app/gunicorn_config.py "$@" "app.main:create_app()"',
        "dev": 'exec python -m app serve --reload --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}"'
        ' "$@"',
        "worker": 'exec python -m app worker "$@"',
        "migrate": 'exec python -m app migrate "$@"',
        "shell": 'exec python -m app shell "$@"',
    }
    for mode, command in execs.items():
        block = code[code.index(f"{mode})") :]
        block = block[: block.index(";;")]
        assert [line for line in block if line.startswith("exec ")] == [command], mode
    # The database first where a mode needs it; the configuration checked before the server.
    assert "wait_for_database" in code[code.index("worker)") : code.index("migrate)")]
    assert "wait_for_database" in code[code.index("migrate)") : code.index("shell)")]
    assert "prepare" in code[code.index("dev)") : code.index("worker)")]
    assert 'exec "$mode" "$@"' in code  # anything else passes through


def test_production_dockerfile_follows_the_conventions() -> None:
    """Exact values: a plausible wrong one (another path, flag, order or user) fails here,
    not only a deleted line."""
    assert values(PROD, "FROM") == [
        "python:3.11-slim AS base",
        "base AS wheels-build",
        "scratch AS wheels-local",
        "wheels-${WHEELS_SOURCE} AS wheels",
        "base AS security-scan",
        "base AS runtime",
    ]
    assert assignments(PROD, "ARG")["WHEELS_SOURCE"] == "build"
    base = [i for i in PROD if i.stage == "base"]
    assert [i.keyword for i in base] == ["FROM", "ENV", "WORKDIR"], "nothing copied into base"
    assert assignments(base, "ENV") == {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": "/app",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    assert values(base, "WORKDIR") == ["/app"]
    keywords = [i.keyword for i in PROD]
    assert keywords.index("WORKDIR") < keywords.index("COPY")

    # The builder: apt with cache mounts, then only the lock file (and the strip script)
    # before the wheels are built with hash checking, from the lock alone.
    builder = [i for i in PROD if i.stage == "wheels-build"]
    apt, wheels = runs(builder)
    assert apt.flags == [
        "--mount=type=cache,target=/var/cache/apt,sharing=locked",
        "--mount=type=cache,target=/var/lib/apt,sharing=locked",
    ]
    assert values(builder, "COPY") == ["requirements.lock.txt scripts/strip_wheels.py ./"]
    assert builder.index(wheels) > next(n for n, i in enumerate(builder) if i.keyword == "COPY")
    assert wheels.flags == ["--mount=type=cache,target=/root/.cache/pip"]
    assert wheels.command.split("&&")[0].split() == [
        "python", "-m", "pip", "wheel", "--no-deps", "--require-hashes",
        "--wheel-dir", "/wheels", "-r", "requirements.lock.txt",
    ]  # fmt: skip
    assert wheels.command.split("&&")[1].split() == ["python", "strip_wheels.py", "/wheels"]
    assert values(PROD, "COPY", "wheels-local") == ["wheels/ /wheels/"]

    # The runtime: dependencies from the wheelhouse with no index, before any source.
    runtime = [i for i in PROD if i.stage == "runtime"]
    (install,) = [i for i in runs(runtime) if "pip install" in i.command]
    assert install.flags == [
        "--mount=type=bind,from=wheels,source=/wheels,target=/wheels",
        "--mount=type=bind,source=requirements.lock.txt,target=/tmp/requirements.lock.txt",
    ]
    pip = next(c for c in install.command.split("&&") if "pip install" in c).split()
    assert pip == [
        "python", "-m", "pip", "install", "--no-deps", "--no-index",
        "--find-links", "/wheels", "-r", "/tmp/pins.txt",
    ]  # fmt: skip
    copies = [i for i in runtime if i.keyword in ("COPY", "ADD")]
    assert all(runtime.index(install) < runtime.index(c) for c in copies), "source last"
    assert [c.value for c in copies] == [
        "scripts/docker-entrypoint.sh scripts/wait-for-it.sh scripts/healthcheck.py /app/scripts/",
        "gunicorn_config.py /app/",
        "app/ /app/app/",
    ]
    assert assignments(runtime, "ENV") == {
        "PIP_NO_CACHE_DIR": "1",
        "MALLOC_MMAP_THRESHOLD_": "1048576",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/prometheus",
        "HOST": "0.0.0.0",  # noqa: S104 - inside the container: every interface
        "PORT": "8000",
        "ENVIRONMENT": "production",  # the strict checks of secrets apply by default
        "BUILD_VERSION": "${BUILD_VERSION}",
        "GIT_COMMIT": "${GIT_COMMIT}",
    }
    user = " ".join(runs(runtime)[0].command.split())
    assert (
        "&& groupadd --system --gid 10001 appuser && useradd --system --uid 10001 --gid appuser"
        " --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin appuser &&"
    ) in user
    assert values(runtime, "USER") == ["10001:10001"]
    assert keywords[-5:] == ["USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"]
    assert values(runtime, "EXPOSE") == ["8000"]
    (healthcheck,) = values(runtime, "HEALTHCHECK")
    assert healthcheck.split() == [
        "--interval=15s", "--timeout=5s", "--start-period=20s", "--retries=3",
        "CMD", '["python",', '"/app/scripts/healthcheck.py"]',
    ]  # fmt: skip
    assert values(runtime, "ENTRYPOINT") == ['["/app/scripts/docker-entrypoint.sh"]']
    assert values(runtime, "CMD") == ['["prod"]']
    args = assignments(PROD, "ARG")
    for arg in (
        "BUILD_VERSION",
        "BUILD_DATE",
        "GIT_COMMIT",
        "SKIP_MEDIA_PACKAGES",
        "WHEELS_SOURCE",
    ):
        assert arg in args, arg
    assert args["SKIP_MEDIA_PACKAGES"] == "true"
    scan = " ".join(" ".join(i.command.split()) for i in runs(PROD, "security-scan"))
    # The scanners run (installed is not enough): bandit over the app, pip-audit over the
    # locked requirements.
    bandit = "&& bandit --recursive --severity-level medium --confidence-level medium app &&"
    assert bandit in scan
    assert "pip-audit --requirement requirements.lock.txt" in scan
    assert not any(":latest" in value for value in values(PROD, "FROM"))


def test_dev_dockerfile_has_dev_dependencies_and_reload() -> None:
    assert values(DEV, "FROM") == ["python:3.11-slim"]
    env = assignments(DEV, "ENV")
    assert {k: env[k] for k in ("PYTHONPATH", "UV_PROJECT_ENVIRONMENT", "PORT")} == {
        "PYTHONPATH": "/app",
        "UV_PROJECT_ENVIRONMENT": "/opt/venv",  # outside the bind-mounted /app
        "PORT": "8000",
    }
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert values(DEV, "WORKDIR") == ["/app"]
    (sync,) = [i for i in runs(DEV) if i.command.startswith("uv sync")]
    assert sync.command.split() == [
        "uv", "sync", "--frozen", "--no-install-project", "--compile-bytecode"
    ]  # fmt: skip  # with the dev group: no --no-dev
    # The lock first, the source after the install: a code change reuses the layer.
    assert values(DEV, "COPY") == ["pyproject.toml uv.lock ./", ". ."]
    assert DEV.index(sync) == next(n for n, i in enumerate(DEV) if i.keyword == "COPY") + 1
    assert values(DEV, "USER") == ["10001:10001"]
    assert values(DEV, "EXPOSE") == ["8000"]
    assert values(DEV, "ENTRYPOINT") == ['["/app/scripts/docker-entrypoint.sh"]']
    assert values(DEV, "CMD") == ['["dev"]']


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
        # Beyond the conventions' list: nothing the image does not run.
        "tests/", "bench/", ".github/", ".ci/", "deploy/", "data/", "uploads/", "storage/",
        ".tools/", "**/*.log",
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


def _entrypoint_with_python(
    tmp_path: Path, python: str, mode: str
) -> subprocess.CompletedProcess[str]:
    """The entrypoint in `mode`, with `python` (a shell script's body) in place of Python."""
    env = {"PATH": f"{tools_folder(tmp_path / 'bin', python=python)}:/usr/bin:/bin",
           "HOME": str(tmp_path)}  # fmt: skip
    return subprocess.run(
        ["sh", str(ROOT / "scripts/docker-entrypoint.sh"), mode], env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "failing", "message"),
    [
        ("dev", "prepare", "preparation failed: not starting"),
        ("worker", "wait-for-db", "database not reachable: giving up"),
        ("migrate", "wait-for-db", "database not reachable: giving up"),
    ],
)
def test_the_entrypoint_stops_with_the_status_and_one_json_line(
    tmp_path: Path, mode: str, failing: str, message: str
) -> None:
    """A failed preparation or database wait ends the container with that step's status
    and one JSON log line saying why; the server or worker never starts."""
    python = f'case "$*" in *"{failing}"*) echo "step output"; exit 3;; esac\necho "ran $*"'
    result = _entrypoint_with_python(tmp_path, python, mode)
    assert result.returncode == 3, result.stdout + result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last == {"level": "error", "logger": "entrypoint", "message": message}
    assert "ran -m app serve" not in result.stdout
    assert "ran -m app worker" not in result.stdout


def test_the_entrypoint_waits_for_the_database_before_the_worker_and_migrations(
    tmp_path: Path,
) -> None:
    for mode, last in (("worker", "-m app worker"), ("migrate", "-m app migrate")):
        result = _entrypoint_with_python(tmp_path / mode, 'echo "ran $*"', mode)
        assert result.returncode == 0, result.stderr
        ran = [line for line in result.stdout.splitlines() if line.startswith("ran ")]
        assert ran[-2:] == ["ran -m app wait-for-db --json", f"ran {last}"], mode
