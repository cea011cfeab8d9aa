"""The servers and containers a benchmark runs: started on 127.0.0.1, ready when they answer,
always stopped and removed after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tools.docker import ROOT, children, docker, terminate, wait_until

GUNICORN = [
    *(sys.executable, "-m", "gunicorn", "--config", "gunicorn_config.py"),
    "app.main:create_app()",
]


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    """Seconds until `url` answers 200; TimeoutError after `timeout`."""
    started = time.monotonic()

    def answers() -> bool:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)

    wait_until(answers, timeout, f"{url} to answer 200", interval=0.05)
    return time.monotonic() - started


@contextlib.contextmanager
def server(
    command: list[str], env: dict[str, str], port: int, path: str = "/live"
) -> Iterator[subprocess.Popen[bytes]]:
    log_file = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{path}", 30)
        yield process
    finally:
        terminate(process)
        log_file.close()


def uvicorn(app: str, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", "1", "--no-access-log", "--log-level", "warning"),
    ]


def gunicorn_env(port: int, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "development",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"prometheus-{port}"),
        "LOG_LEVEL": "info",
        # As the production image sets it (docker/Dockerfile.prod): the 19 MiB blocks of an
        # argon2 hash go back to the system when freed. Without it glibc keeps the first
        # ones in the heap, and every process measured here carried 19 MB more than the
        # same service in its image.
        "MALLOC_MMAP_THRESHOLD_": "1048576",
        **extra,
    }


def memory_mb(pid: int, field: str = "Rss") -> float:
    """One field of /proc/PID/smaps_rollup in MB: Rss counts the pages a worker shares with
    its master in full, Pss shares them out (the sum over processes is what they use)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def worker_rss_mb(master: int) -> float:
    """The resident memory of the (first) worker of `master`, in MB."""
    workers = children(master)
    return memory_mb(workers[0]) if workers else float("nan")


def migrate(env: dict[str, str], timeout: float = 60) -> None:
    """`python -m app migrate`, retried while the database starts."""

    def migrated() -> bool:
        run = [sys.executable, "-m", "app", "migrate"]
        result = subprocess.run(
            run, cwd=ROOT, env={**os.environ, **env}, capture_output=True, check=False
        )
        return result.returncode == 0

    wait_until(migrated, timeout, "the database to take its migrations", interval=0.5)


@contextlib.contextmanager
def container(*args: str) -> Iterator[str]:
    cid = docker("run", "-d", "--label", "shipshape-bench=1", *args).stdout.strip()
    try:
        yield cid
    finally:
        docker("rm", "-f", "-v", cid, check=False)


def published(cid: str, port: int = 8000) -> int:
    """The 127.0.0.1 port Docker published for the container's `port`, once it has one."""

    def mapped() -> int:
        mapping = docker("port", cid, f"{port}/tcp").stdout.split()[0]
        return int(mapping.rsplit(":", 1)[1])

    return wait_until(mapped, 30, f"a port mapping for {port}", interval=0.02)
