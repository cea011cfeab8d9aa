"""scripts/smoke-image.sh: the check CI runs on each platform's image before pushing it."""

from __future__ import annotations

import subprocess

from tests.container.conftest import BUILD_VERSION, GIT_COMMIT
from tests.docker_utils import ROOT


def _smoke(image: str, timeout: str = "120") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "scripts/smoke-image.sh", image, "linux/amd64"],
        cwd=ROOT, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "SMOKE_TIMEOUT": timeout},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _smoke_containers() -> str:
    return subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", "label=shipshape.smoke"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip


def test_a_production_image_passes_and_reports_its_build(prod_image: str) -> None:
    result = _smoke(prod_image)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f'"version":"{BUILD_VERSION}"' in result.stdout
    assert f'"git_commit":"{GIT_COMMIT}"' in result.stdout
    assert f"{prod_image} serves on linux/amd64" in result.stdout
    assert _smoke_containers() == ""  # removed again


def test_an_image_that_does_not_serve_fails_with_its_log() -> None:
    # The base image's default command (python3) exits at once: nothing ever serves.
    result = _smoke("python:3.11-slim", timeout="20")
    assert result.returncode == 1
    assert "python:3.11-slim did not serve (running: false)" in result.stderr
    assert _smoke_containers() == ""
