"""The measurements: each runs what it measures on this machine and adds its figures and
targets to the report."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
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
)
from tools.compose_env import compose_environment, prod_env_file
from tools.docker import ROOT, children, docker, free_port, wait_until

PG_PASSWORD = secrets.token_urlsafe(12)
ROUNDS = 5  # the servers take turns this many times; each figure is a median over them
IMAGE = "shipshape-bench:latest"
ITEMS = 10_000  # rows in the items table of the speed runs
PAGE = "/api/v1/items?limit=50"


def _rounds(
    report: Report,
    rounds: int,
    seconds: float,
    plan: dict[str, tuple[int, str | list[str], dict[str, str]]],
) -> None:
    """Every server of `plan` under load once per round, the order turning each round, so
    that a drift in the machine's load falls on every server alike. One short unrecorded
    run each first: the first requests of a process fill its caches."""
    for port, path, headers in plan.values():
        run_load(port, path, min(seconds, 1.0), headers=headers)
    names = list(plan)
    for round_ in range(rounds):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            log(f"load: {name} (round {round_ + 1}/{rounds})")
            port, path, headers = plan[name]
            report.add(round_, name, run_load(port, path, seconds, headers=headers))


def measure_http(report: Report, seconds: float, rounds: int, tmp: Path) -> None:
    """Without Docker: bare FastAPI and the service's /live from this venv (SQLite), in
    rounds. The production image's figures (measure_speed) are the ones that count."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    migrate(env)
    bare, live = free_port(), free_port()
    with (
        server(uvicorn("bench.apps.fastapi_hello:app", bare), {}, bare),
        server(GUNICORN, gunicorn_env(live, tmp, **env), live) as process,
    ):
        _rounds(
            report, rounds, seconds, {BARE_FASTAPI: (bare, "/live", {}), LIVE: (live, "/live", {})}
        )
        _memory_fact(report, process.pid, "this venv")


def measure_speed(report: Report, seconds: float, rounds: int) -> None:
    """Bare FastAPI and the service, both run from the production image with its defaults
    (one worker each), Postgres with ITEMS rows and Redis beside them: /live, the first
    items page (which the caches hold) and pages after a cursor (which no cache holds).

    Every container is on the host's network, listening on 127.0.0.1 only: the load reaches
    each server as nginx reaches it in production, with no port-forwarding process in
    between whose own cost would be added to every request."""
    ports = {name: free_port() for name in ("postgres", "redis", "app", "bare")}
    password = secrets.token_urlsafe(18)
    host = ("--network", "host")
    database = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{ports['postgres']}/postgres"
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(
            container(
                *host, "-e", f"POSTGRES_PASSWORD={PG_PASSWORD}", "postgres:15-alpine",
                *("-c", f"port={ports['postgres']}", "-c", "listen_addresses=127.0.0.1"),
            )
        )  # fmt: skip
        stack.enter_context(
            container(
                *host, "redis:7-alpine", "redis-server", "--port", str(ports["redis"]),
                *("--bind", "127.0.0.1", "--save", ""),
            )
        )  # fmt: skip
        ready = ("exec", pg, "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(ports["postgres"]))
        wait_until(
            lambda: docker(*ready, "-U", "postgres", check=False).returncode == 0,
            60,
            "Postgres to accept connections",
            interval=0.1,
        )
        app = stack.enter_context(
            container(
                *host, *_image_env(), *("-e", "HOST=127.0.0.1", "-e", f"PORT={ports['app']}"),
                *("-e", "WEB_CONCURRENCY=1", "-e", f"DATABASE_URL={database}"),
                *("-e", f"REDIS_URL=redis://127.0.0.1:{ports['redis']}/0"),
                *("-e", "CREATE_SUPERUSER=true", "-e", f"ADMIN_PASSWORD={password}"),
                IMAGE,
            )
        )  # fmt: skip
        stack.enter_context(
            container(
                # The image's healthcheck asks for the service, which this is not.
                *host, "--no-healthcheck", "-v", f"{ROOT / 'bench' / 'apps'}:/bench:ro",
                "--entrypoint", "python",
                IMAGE, "-m", "uvicorn", "--app-dir", "/bench", "fastapi_hello:app",
                *("--host", "127.0.0.1", "--port", str(ports["bare"])),
                *("--workers", "1", "--no-access-log", "--log-level", "warning"),
            )
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{ports['app']}/ready", 120)
        wait_http(f"http://127.0.0.1:{ports['bare']}/live", 60)
        _seed(pg, ports["postgres"])
        headers = {"Authorization": f"Bearer {_login(ports['app'], password)}"}
        cursors = _cursor_pages(ports["app"], headers)
        report.facts["pages after a cursor in the uncached run"] = f"{len(cursors)}"
        _rounds(
            report,
            rounds,
            seconds,
            {
                BARE_FASTAPI: (ports["bare"], "/live", {}),
                LIVE: (ports["app"], "/live", {}),
                ITEMS_WARM: (ports["app"], PAGE, headers),
                ITEMS_COLD: (ports["app"], cursors, headers),
            },
        )
        master = int(docker("inspect", "--format", "{{.State.Pid}}", app).stdout)
        pss = _memory_fact(report, master, "image, after the rounds")
        report.target(
            "image: master + 1 worker PSS ≤ 100 MB after the rounds",
            f"{sum(pss):.0f} MB",
            len(pss) == 2 and sum(pss) <= 100,
        )


def _seed(pg: str, port: int) -> None:
    """ITEMS items of the superuser, a second apart, as the table's statistics know them."""
    sql = (
        "INSERT INTO items (id, title, description, owner_id, created_at, updated_at) "  # noqa: S608 (ITEMS is a constant)
        "SELECT gen_random_uuid(), 'bench item ' || n, repeat('x', 80), u.id, "
        "now() - n * interval '1 second', now() "
        f"FROM generate_series(1, {ITEMS}) AS n, users AS u WHERE u.username = 'admin'; "
        "ANALYZE items;"
    )
    psql = ["exec", "-e", f"PGPASSWORD={PG_PASSWORD}", pg, "psql", "-q", "-h", "127.0.0.1"]
    docker(*psql, "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql)


def _cursor_pages(port: int, headers: dict[str, str]) -> list[str]:
    """The paths of every page after the first, found by following `next`."""
    paths: list[str] = []
    path = PAGE
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            following = json.load(response)["next"]
        if not following:
            return paths
        path = f"{PAGE}&cursor={urllib.parse.quote(following)}"
        paths.append(path)


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


def _login(port: int, password: str) -> str:
    data = urllib.parse.urlencode({"username": "admin", "password": password}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/token", data=data)
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


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
    built = _image_id(IMAGE)
    with (context / "app" / "__init__.py").open("a") as handle:
        # Unique: the same line every run would find its layer in the build cache.
        handle.write(f"# a one-line change {secrets.token_hex(8)}\n")
    log("image: rebuild after a one-line source change")
    started = time.monotonic()
    docker(*build, timeout=900)
    rebuild = time.monotonic() - started
    if _image_id(IMAGE) == built:
        raise RuntimeError("the one-line change did not reach the image: rebuild not measured")
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


def _image_id(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


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
