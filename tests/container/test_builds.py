"""The other builds: the dev image, the offline wheelhouse build, the security scan."""

from __future__ import annotations

from tests.docker_utils import ROOT, TEST_IMAGE, docker, running


def test_dev_image_runs_with_reload_as_the_app_user(dev_image: str) -> None:
    assert docker("run", "--rm", dev_image, "id", "-u").stdout.strip() == "10001"
    # The user is appuser, with no login shell, and no other account has its uid.
    accounts = docker("run", "--rm", dev_image, "getent", "passwd").stdout.splitlines()
    assert [a for a in accounts if a.split(":")[2] in ("10001", "0")] == [
        "root:x:0:0:root:/root:/bin/bash",
        "appuser:x:10001:10001::/nonexistent:/usr/sbin/nologin",
    ]
    tools = docker(
        "run", "--rm", dev_image, "sh", "-c", "pytest --version && ruff --version"
    ).stdout
    assert "pytest" in tools
    # Dependencies precompiled: PYTHONDONTWRITEBYTECODE would make every reload compile them.
    compiled = docker(
        "run", "--rm", dev_image, "python", "-c",
        "import pathlib, fastapi, sqlalchemy; print(all(any(pathlib.Path(m.__file__).parent"
        ".glob('__pycache__/*.pyc')) for m in (fastapi, sqlalchemy)))",
    ).stdout  # fmt: skip
    assert compiled.strip() == "True"
    # The host's bytecode caches stay out of the build context (.dockerignore, **/), at any depth.
    caches = docker("run", "--rm", dev_image, "find", "/app", "-name", "__pycache__").stdout
    assert caches.strip() == ""
    with running(dev_image, env={"RUN_MIGRATIONS": "true"}) as container:
        container.wait_ready()
        logs = container.logs()
    assert "Will watch for changes" in logs or "reloader" in logs.lower(), logs[-2000:]


def test_offline_build_from_a_prebuilt_wheelhouse() -> None:
    """`make wheelhouse-build` on the host, then a build with no network at all."""
    import subprocess

    subprocess.run(
        ["make", "wheelhouse-build"], cwd=ROOT, check=True, capture_output=True, timeout=600
    )
    docker(
        "build", "--network", "none",
        "--file", str(ROOT / "docker/Dockerfile.prod"),
        "--build-arg", "WHEELS_SOURCE=local",
        "--tag", f"{TEST_IMAGE}:offline",
        str(ROOT),
    )  # fmt: skip
    result = docker(
        "run",
        "--rm",
        f"{TEST_IMAGE}:offline",
        "python",
        "-c",
        "import app.main, gunicorn, asyncpg; print('ok')",
    )
    assert result.stdout.strip() == "ok"
