"""Container tier: build the real Dockerfiles once per session."""

from __future__ import annotations

import pytest

from tests.docker_utils import ROOT, TEST_IMAGE, docker

PROD_IMAGE = f"{TEST_IMAGE}:prod"
DEV_IMAGE = f"{TEST_IMAGE}:dev"
BUILD_VERSION = "9.9.9-test"
GIT_COMMIT = "c0ffee1"


def build_prod_image() -> str:
    """The production image of this checkout, stamped with a test version (cached by
    BuildKit: the tiers that need it build it once per engine)."""
    docker(
        "build",
        "--file", str(ROOT / "docker/Dockerfile.prod"),
        "--build-arg", f"BUILD_VERSION={BUILD_VERSION}",
        "--build-arg", "BUILD_DATE=2026-01-01T00:00:00Z",
        "--build-arg", f"GIT_COMMIT={GIT_COMMIT}",
        "--tag", PROD_IMAGE,
        str(ROOT),
    )  # fmt: skip
    return PROD_IMAGE


@pytest.fixture(scope="session")
def prod_image() -> str:
    return build_prod_image()


@pytest.fixture(scope="session")
def dev_image() -> str:
    docker("build", "--file", str(ROOT / "docker/Dockerfile.dev"), "--tag", DEV_IMAGE, str(ROOT))
    return DEV_IMAGE
