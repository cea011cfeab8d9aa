"""The measurements: each runs what it measures on this machine and adds its figures and
targets to the report."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.load import run_load
from bench.report import BARE_FASTAPI, ITEMS_COLD, ITEMS_WARM, LIVE, Report, log
from bench.servers import (
    GUNICORN,
    container,
    gunicorn_env,
    memory_mb,
    migrate,
    published,
    server,
    uvicorn,
    wait_http,
    worker_rss_mb,
)
from tools.compose_env import compose_environment, prod_env_file
from tools.docker import ROOT, children, docker, free_port, wait_until

PG_PASSWORD = secrets.token_urlsafe(12)
BARE_ASGI = "A: bare ASGI (uvicorn)"
HTTP_SERVERS = (BARE_ASGI, BARE_FASTAPI, LIVE)
LIVE_TWO_WORKERS = "Shipshape /live, 2 workers"
ROUNDS = 2  # the baselines and /live take turns; each keeps its best round
IMAGE = "shipshape-bench:latest"


def measure_http(report: Report, seconds: float, tmp: Path) -> None:
    """A, B and Shipshape /live run side by side and take turns under load, ROUNDS times;
    each keeps its best round. On a shared machine the load around a run drifts: turns
    spread that drift over all three instead of charging it to whichever ran last."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    migrate(env)
    ports = {name: free_port() for name in HTTP_SERVERS}
    commands = {
        BARE_ASGI: (uvicorn("bench.apps.asgi_hello:app", ports[BARE_ASGI]), {}, "/"),
        BARE_FASTAPI: (uvicorn("bench.apps.fastapi_hello:app", ports[BARE_FASTAPI]), {}, "/live"),
        LIVE: (GUNICORN, gunicorn_env(ports[LIVE], tmp, **env), "/live"),
    }
    with contextlib.ExitStack() as stack:
        processes = {
            name: stack.enter_context(server(command, server_env, ports[name], ready_path))
            for name, (command, server_env, ready_path) in commands.items()
        }
        for round_ in range(1, ROUNDS + 1):
            for name in HTTP_SERVERS:
                log(f"load: {name} (round {round_}/{ROUNDS})")
                result = run_load(ports[name], "/live", seconds)
                if name not in report.http or result.rps > report.http[name].rps:
                    report.http[name] = result
        master = processes[LIVE].pid
        report.facts["RSS per worker, idle after /live load"] = f"{worker_rss_mb(master):.0f} MB"
        _memory_fact(report, master, "this venv")
    # The service's real shape on a 2-CPU machine: two workers (the load generator shares
    # the CPUs, so the scaling ratio is a floor).
    port = free_port()
    with server(GUNICORN, gunicorn_env(port, tmp, **env, WEB_CONCURRENCY="2"), port) as two:
        log(f"load: {LIVE_TWO_WORKERS}")
        report.http[LIVE_TWO_WORKERS] = run_load(port, "/live", seconds)
        _memory_fact(report, two.pid, "this venv")
    scaling = report.http[LIVE_TWO_WORKERS].rps / report.http[LIVE].rps
    report.facts["/live, 2 workers ÷ 1 worker (req/s)"] = f"{scaling:.2f} ×"


def _pss(master: int) -> list[float]:
    """PSS of a gunicorn master and its workers (shared pages counted once), in MB."""
    return [memory_mb(pid, "Pss") for pid in [master, *children(master)]]


def _memory_fact(report: Report, master: int, where: str) -> list[float]:
    pss = _pss(master)
    report.facts[f"PSS master + {len(pss) - 1} worker(s), {where}, after /live load"] = (
        f"{pss[0]:.0f} MB + " + " + ".join(f"{p:.0f}" for p in pss[1:]) + " MB"
    )
    return pss


def measure_memory(report: Report, seconds: float) -> None:
    """The production image's gunicorn (SQLite, one worker, then two) after /live load,
    judged against N x 70 MB + 30 MB: memory as deployed. The development venv's figures
    (measure_http) run higher: packages only the tools there need, such as cryptography,
    are imported by PyJWT and redis when they are installed."""
    for workers in (1, 2):
        settings = ("-e", f"WEB_CONCURRENCY={workers}", "-p", "127.0.0.1::8000")
        with container(*_image_env(), *settings, IMAGE) as cid:
            port = published(cid)
            wait_http(f"http://127.0.0.1:{port}/ready", 60)
            log(f"load: /live in the image, {workers} worker(s)")
            run_load(port, "/live", seconds)
            master = int(docker("inspect", "--format", "{{.State.Pid}}", cid).stdout)
            pss = _memory_fact(report, master, "image")
        budget = workers * 70 + 30
        report.target(
            f"image: master + {workers} worker(s) PSS ≤ {budget} MB (N × 70 + 30)",
            f"{sum(pss):.0f} MB",
            len(pss) == workers + 1 and sum(pss) <= budget,
        )


def measure_items(report: Report, seconds: float, tmp: Path) -> None:
    """The items page (50 rows, Postgres) with the Redis cache cold (TTL 0) and warm."""
    postgres = ("-e", f"POSTGRES_PASSWORD={PG_PASSWORD}", "-p", "127.0.0.1::5432")
    with (
        container(*postgres, "postgres:15-alpine") as pg,
        container("-p", "127.0.0.1::6379", "redis:7-alpine") as redis,
    ):
        url = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{published(pg, 5432)}/postgres"
        redis_url = f"redis://127.0.0.1:{published(redis, 6379)}/0"
        env = {"DATABASE_URL": url, "ENVIRONMENT": "development"}
        migrate(env)
        subprocess.run(
            [sys.executable, "-m", "app", "create-superuser"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        for cache, ttl in (("cold", "0"), ("warm", "60")):
            port = free_port()
            server_env = gunicorn_env(port, tmp, **env, REDIS_URL=redis_url, CACHE_TTL_SECONDS=ttl)
            with server(GUNICORN, server_env, port) as process:
                headers = {"Authorization": f"Bearer {_login(port)}"}
                if cache == "cold":
                    _create_items(port, headers, 50)
                log(f"load: items page, cache {cache}")
                report.http[ITEMS_COLD if cache == "cold" else ITEMS_WARM] = run_load(
                    port, "/api/v1/items?limit=50", seconds, headers=headers
                )
                report.facts[f"RSS per worker under load (items, {cache})"] = (
                    f"{worker_rss_mb(process.pid):.0f} MB"
                )


def _login(port: int) -> str:
    data = b"username=admin&password=CHANGE_ME_DEV_ADMIN_PASSWORD"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/token", data=data)
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


def _create_items(port: int, headers: dict[str, str], count: int) -> None:
    headers = {**headers, "Content-Type": "application/json"}
    for n in range(count):
        body = json.dumps({"title": f"bench item {n}", "description": "x" * 80}).encode()
        url = f"http://127.0.0.1:{port}/api/v1/items"
        urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10).close()


def measure_image(report: Report, quick: bool, tmp: Path) -> None:
    """Cold build, rebuild after a one-line change, size over the base image."""
    context = tmp / "context"
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    build = ("build", "-q", "-f", "docker/Dockerfile.prod", "-t", IMAGE, str(context))
    cold = None
    if not quick:
        log("image: cold build (no cache)")
        started = time.monotonic()
        docker("build", "--no-cache", *build[1:], timeout=900)
        cold = time.monotonic() - started
        report.facts["cold build"] = f"{cold:.1f} s"
    else:
        docker(*build, timeout=900)
    with (context / "app" / "__init__.py").open("a") as handle:
        handle.write("# a one-line change\n")
    log("image: rebuild after a one-line source change")
    started = time.monotonic()
    docker(*build, timeout=900)
    rebuild = time.monotonic() - started
    report.facts["rebuild after a one-line change"] = f"{rebuild:.1f} s"
    if not quick:
        measure_offline_build(report, context)
    size = _image_size(IMAGE)
    added = (size - _image_size("python:3.11-slim")) / 1e6
    report.facts["image size / over python:3.11-slim"] = f"{size / 1e6:.0f} MB / {added:.1f} MB"
    report.target("runtime layers over the base ≤ 80 MB", f"{added:.1f} MB", added <= 80)
    rebuilt = "source-only rebuild ≤ 10 % of a cold build"
    if cold:
        report.target(rebuilt, f"{rebuild / cold:.0%}", rebuild / cold <= 0.10)
    else:
        report.target(rebuilt, f"{rebuild:.1f} s (no cold build in --quick)", None)


def _image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)


def measure_offline_build(report: Report, context: Path) -> None:
    log("image: wheelhouse download (make wheelhouse-build)")
    started = time.monotonic()
    subprocess.run(
        ["make", "wheelhouse-build", f"PYTHON={sys.executable}"],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=900,
    )
    report.facts["wheelhouse download (make wheelhouse-build)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    log("image: offline build from ./wheels (--network none, no cache)")
    offline = "shipshape-bench-offline:latest"
    started = time.monotonic()
    docker(
        *("build", "-q", "--no-cache", "--network", "none", "-f", "docker/Dockerfile.prod"),
        *("--build-arg", "WHEELS_SOURCE=local", "-t", offline, str(context)),
        timeout=900,
    )
    report.facts["offline build from ./wheels (--network none, no cache)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    docker("rmi", offline, check=False)


def _image_env() -> list[str]:
    """The production image's settings for a run on its embedded SQLite."""
    return [
        *("-e", f"SECRET_KEY={secrets.token_urlsafe(40)}"),
        *("-e", f"JWT_SECRET_KEY={secrets.token_urlsafe(40)}"),
        *("-e", "RUN_MIGRATIONS=true"),
    ]


def measure_start(report: Report) -> None:
    """`docker run` until /ready answers 200: on SQLite, and on Postgres with migrations."""
    env = [*_image_env(), "-e", "WEB_CONCURRENCY=1"]
    started = time.monotonic()
    with container(*env, "-p", "127.0.0.1::8000", IMAGE) as cid:
        wait_http(f"http://127.0.0.1:{published(cid)}/ready", 60)
        sqlite = time.monotonic() - started
    report.facts["docker run → /ready 200 (SQLite)"] = f"{sqlite:.2f} s"
    report.target("container start → ready ≤ 3 s on SQLite", f"{sqlite:.2f} s", sqlite <= 3)

    network = f"shipshape-bench-{secrets.token_hex(3)}"
    docker("network", "create", network)
    try:
        started = time.monotonic()
        postgres = ("--network", network, "--name", f"{network}-db")
        with container(
            *postgres, "-e", f"POSTGRES_PASSWORD={PG_PASSWORD}", "postgres:15-alpine"
        ) as pg:
            ready = ("exec", pg, "pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres")
            wait_until(
                lambda: docker(*ready, check=False).returncode == 0,
                60,
                "Postgres to accept connections",
                interval=0.05,
            )
            report.facts["Postgres docker run → accepting connections"] = (
                f"{time.monotonic() - started:.2f} s"
            )
            url = f"postgresql://postgres:{PG_PASSWORD}@{network}-db:5432/postgres"
            started = time.monotonic()
            app = ("--network", network, "-e", f"DATABASE_URL={url}", "-p", "127.0.0.1::8000")
            with container(*env, *app, IMAGE) as cid:
                wait_http(f"http://127.0.0.1:{published(cid)}/ready", 60)
            report.facts["docker run → /ready 200 (Postgres, migrations)"] = (
                f"{time.monotonic() - started:.2f} s"
            )
    finally:
        docker("network", "rm", network, check=False)


def measure_stack(report: Report, tmp: Path) -> None:
    """`up --wait` of the production stack (nginx, app, worker, Postgres, Redis, backup),
    images already built, on free 127.0.0.1 ports; taken down with its volumes after."""
    domain = "shipshape.test"
    env_file = tmp / "stack.env"
    overrides = {
        "DOMAIN": domain,
        "BASE_URL": f"https://{domain}",
        "CORS_ORIGINS": f"https://{domain}",
        "PUBLISH_IP": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(free_port()),
        "APP_TAG": "bench",
    }
    prod_env_file(env_file, overrides)
    env = compose_environment(env_file)
    compose = [
        *("docker", "compose", "--project-name", f"shipshape-bench-{secrets.token_hex(3)}"),
        *("--env-file", str(env_file), "-f", "docker-compose.yml", "-f", "docker-compose.prod.yml"),
    ]

    def run(*args: str, check: bool = True) -> None:
        result = subprocess.run(
            [*compose, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()[-500:]
            raise RuntimeError(f"compose {args[0]}: {output}")

    try:
        log("stack: build (cached), then up --wait")
        run("build")
        started = time.monotonic()
        run("up", "--detach", "--wait", "--wait-timeout", "180")
        report.facts["prod stack up --wait (images built)"] = f"{time.monotonic() - started:.1f} s"
    finally:
        run("down", "--volumes", "--remove-orphans", check=False)
