"""Shipshape benchmarks: speed, size and start time, as ratios against baselines measured
in the same run on the same machine (absolute figures on a shared machine are noise).

    python -m bench.run            # `make bench`: everything, under 5 minutes
    python -m bench.run --quick    # 1 s load runs, no cold image build (CI smoke test)

Prints a table and writes bench/results/latest.md and bench/results/latency.png. All load
goes to 127.0.0.1 only, every run bounded in time and in requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import LoadResult, run_load
from tools.compose_env import compose_environment, free_port, prod_env_file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_PASSWORD = secrets.token_urlsafe(12)


@dataclass
class Report:
    quick: bool
    http: dict[str, LoadResult] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    targets: list[tuple[str, str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, name: str, figure: str, met: bool | None) -> None:
        self.targets.append((name, figure, met))


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    """Seconds until `url` answers 200; raises after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)  # polling interval, bounded by the timeout
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g}s")


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
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log_file.close()


def uvicorn(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--no-access-log", "--log-level", "warning"]  # fmt: skip


def gunicorn_env(port: int, tmp: Path, **extra: str) -> dict[str, str]:
    metrics = tmp / f"prometheus-{port}"
    return {
        "ENVIRONMENT": "development", "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics), "LOG_LEVEL": "info",
        # One worker by design: its periodic recycle would be measured as an outage.
        "MAX_REQUESTS": "0", **extra,
    }  # fmt: skip


GUNICORN = [
    sys.executable,
    "-m",
    "gunicorn",
    "--config",
    "gunicorn_config.py",
    "app.main:create_app()",
]


def worker_rss_mb(master: int) -> float:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == master:
                status = (stat.parent / "status").read_text()
                kb = int(
                    next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[
                        1
                    ]
                )
                return kb / 1024
        except (OSError, StopIteration, ValueError):
            continue
    return float("nan")


def docker_ok() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


def docker(*args: str, timeout: float = 900) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout.strip()


@contextlib.contextmanager
def container(*args: str) -> Iterator[str]:
    cid = docker("run", "-d", "--label", "shipshape-bench=1", *args)
    try:
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True, check=False)


def published(cid: str, port: int) -> int:
    return int(docker("port", cid, f"{port}/tcp").split()[0].rsplit(":", 1)[1])


# --- measurements ---------------------------------------------------------------------


ROUNDS = 2  # the baselines and /live take turns; each keeps its best round


def measure_http(report: Report, seconds: float, tmp: Path) -> None:
    """A, B and Shipshape /live run side by side and take turns under load, ROUNDS times;
    each keeps its best round. On a shared machine the load around a run drifts: turns
    spread that drift over all three instead of charging it to whichever ran last."""
    sqlite = tmp / "bench.db"
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{sqlite}"}
    subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, env={**os.environ, **env},
                   capture_output=True, check=True)  # fmt: skip
    ports = {name: free_port() for name in HTTP_SERVERS}
    commands = {
        "A: bare ASGI (uvicorn)": (uvicorn("bench.apps.asgi_hello:app", ports["A: bare ASGI (uvicorn)"]), {}, "/"),
        "B: bare FastAPI (uvicorn)": (uvicorn("bench.apps.fastapi_hello:app", ports["B: bare FastAPI (uvicorn)"]), {}, "/live"),
        LIVE: (GUNICORN, gunicorn_env(ports[LIVE], tmp, **env), "/live"),
    }  # fmt: skip
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
        report.facts["RSS per worker, idle after /live load"] = (
            f"{worker_rss_mb(processes[LIVE].pid):.0f} MB"
        )


LIVE = "Shipshape /live (gunicorn + middleware)"
HTTP_SERVERS = ("A: bare ASGI (uvicorn)", "B: bare FastAPI (uvicorn)", LIVE)


def measure_items(report: Report, seconds: float, tmp: Path) -> None:
    with container("-e", f"POSTGRES_PASSWORD={PG_PASSWORD}", "-p", "127.0.0.1::5432", "postgres:15-alpine") as pg, \
         container("-p", "127.0.0.1::6379", "redis:7-alpine") as redis:  # fmt: skip
        url = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{published(pg, 5432)}/postgres"
        redis_url = f"redis://127.0.0.1:{published(redis, 6379)}/0"
        env = {"DATABASE_URL": url, "ENVIRONMENT": "development"}
        deadline = time.monotonic() + 60
        while subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, env={**os.environ, **env},
                             capture_output=True, check=False).returncode != 0:  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("Postgres did not come up for the items benchmark")
            time.sleep(0.5)  # retry pacing while the database starts, bounded by the deadline
        seed = ("from app.services.users import ensure_superuser_standalone\n"
                "run(ensure_superuser_standalone(settings))\n")  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "app", "shell", "-c", seed],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        for cache, ttl in (("cold", "0"), ("warm", "60")):
            port = free_port()
            server_env = gunicorn_env(port, tmp, **env, REDIS_URL=redis_url, CACHE_TTL_SECONDS=ttl)
            with server(GUNICORN, server_env, port) as process:
                token = _login(port)
                headers = {"Authorization": f"Bearer {token}"}
                if cache == "cold":
                    _create_items(port, headers, 50)
                log(f"load: items page, cache {cache}")
                report.http[f"Shipshape items ?limit=50, Postgres, cache {cache}"] = run_load(
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
    for n in range(count):
        body = json.dumps({"title": f"bench item {n}", "description": "x" * 80}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/items", data=body,
                                         headers={**headers, "Content-Type": "application/json"})  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()


def measure_image(report: Report, quick: bool, tmp: Path) -> None:
    context = tmp / "context"
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    build = [
        "build",
        "-q",
        "-f",
        "docker/Dockerfile.prod",
        "-t",
        "shipshape-bench:latest",
        str(context),
    ]
    if not quick:
        log("image: cold build (no cache)")
        started = time.monotonic()
        docker("build", "--no-cache", *build[1:])
        cold = time.monotonic() - started
        report.facts["cold build"] = f"{cold:.1f} s"
    else:
        docker(*build)
        cold = None
    with (context / "app" / "__init__.py").open("a") as handle:
        handle.write("# a one-line change\n")
    log("image: rebuild after a one-line source change")
    started = time.monotonic()
    docker(*build)
    rebuild = time.monotonic() - started
    report.facts["rebuild after a one-line change"] = f"{rebuild:.1f} s"
    if not quick:
        measure_offline_build(report, context)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", "shipshape-bench:latest"))
    base = int(docker("image", "inspect", "--format", "{{.Size}}", "python:3.11-slim"))
    added = (size - base) / 1e6
    report.facts["image size / over python:3.11-slim"] = f"{size / 1e6:.0f} MB / {added:.1f} MB"
    report.target("runtime layers over the base ≤ 80 MB", f"{added:.1f} MB", added <= 80)
    if cold:
        report.target(
            "source-only rebuild ≤ 10 % of a cold build",
            f"{rebuild / cold:.0%}",
            rebuild / cold <= 0.10,
        )
    else:
        report.target(
            "source-only rebuild ≤ 10 % of a cold build",
            f"{rebuild:.1f} s (no cold build in --quick)",
            None,
        )


def measure_offline_build(report: Report, context: Path) -> None:
    log("image: wheelhouse download (make wheelhouse-build)")
    started = time.monotonic()
    subprocess.run(["make", "wheelhouse-build", f"PYTHON={sys.executable}"], cwd=context,
                   check=True, capture_output=True, timeout=900)  # fmt: skip
    report.facts["wheelhouse download (make wheelhouse-build)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    log("image: offline build from ./wheels (--network none, no cache)")
    started = time.monotonic()
    docker("build", "-q", "--no-cache", "--network", "none", "-f", "docker/Dockerfile.prod",
           "--build-arg", "WHEELS_SOURCE=local", "-t", "shipshape-bench-offline:latest", str(context))  # fmt: skip
    report.facts["offline build from ./wheels (--network none, no cache)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    subprocess.run(
        ["docker", "rmi", "shipshape-bench-offline:latest"], capture_output=True, check=False
    )


def measure_start(report: Report) -> None:
    env = ["-e", f"SECRET_KEY={secrets.token_urlsafe(40)}", "-e", f"JWT_SECRET_KEY={secrets.token_urlsafe(40)}",
           "-e", "RUN_MIGRATIONS=true", "-e", "WEB_CONCURRENCY=1"]  # fmt: skip
    started = time.monotonic()
    with container(*env, "-p", "127.0.0.1::8000", "shipshape-bench:latest") as cid:
        port = _poll_port(cid)
        wait_http(f"http://127.0.0.1:{port}/ready", 60)
        sqlite = time.monotonic() - started
    report.facts["docker run → /ready 200 (SQLite)"] = f"{sqlite:.2f} s"
    report.target("container start → ready ≤ 3 s on SQLite", f"{sqlite:.2f} s", sqlite <= 3)

    network = f"shipshape-bench-{secrets.token_hex(3)}"
    docker("network", "create", network)
    try:
        started = time.monotonic()
        with container("--network", network, "--name", f"{network}-db",
                       "-e", f"POSTGRES_PASSWORD={PG_PASSWORD}", "postgres:15-alpine") as pg:  # fmt: skip
            deadline = time.monotonic() + 60
            while subprocess.run(["docker", "exec", pg, "pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres"],
                                 capture_output=True, check=False).returncode != 0:  # fmt: skip
                if time.monotonic() > deadline:
                    raise RuntimeError("Postgres did not accept connections within 60 s")
                time.sleep(0.05)  # polling interval, bounded by the deadline
            report.facts["Postgres docker run → accepting connections"] = (
                f"{time.monotonic() - started:.2f} s"
            )
            url = f"postgresql://postgres:{PG_PASSWORD}@{network}-db:5432/postgres"
            started = time.monotonic()
            with container(*env, "--network", network, "-e", f"DATABASE_URL={url}",
                           "-p", "127.0.0.1::8000", "shipshape-bench:latest") as cid:  # fmt: skip
                wait_http(f"http://127.0.0.1:{_poll_port(cid)}/ready", 60)
            report.facts["docker run → /ready 200 (Postgres, migrations)"] = (
                f"{time.monotonic() - started:.2f} s"
            )
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)


def measure_stack(report: Report, tmp: Path) -> None:
    """`up --wait` of the production stack (nginx, app, worker, Postgres, Redis, backup),
    images already built, on free 127.0.0.1 ports; taken down with its volumes after."""
    domain = "shipshape.test"
    env_file = tmp / "stack.env"
    prod_env_file(env_file, {
        "DOMAIN": domain, "BASE_URL": f"https://{domain}",
        "CORS_ORIGINS": f"https://{domain}",
        "PUBLISH_IP": "127.0.0.1", "HTTP_PORT": str(free_port()), "HTTPS_PORT": str(free_port()),
        "APP_TAG": "bench",
    })  # fmt: skip
    env = compose_environment(env_file)
    compose = ["docker", "compose", "--project-name", f"shipshape-bench-{secrets.token_hex(3)}",
               "--env-file", str(env_file), "-f", "docker-compose.yml", "-f", "docker-compose.prod.yml"]  # fmt: skip

    def run(*args: str, check: bool = True) -> None:
        result = subprocess.run([*compose, *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, check=False, timeout=600)  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(
                f"compose {args[0]}: {(result.stderr or result.stdout).strip()[-500:]}"
            )

    try:
        log("stack: build (cached), then up --wait")
        run("build")
        started = time.monotonic()
        run("up", "--detach", "--wait", "--wait-timeout", "180")
        report.facts["prod stack up --wait (images built)"] = f"{time.monotonic() - started:.1f} s"
    finally:
        run("down", "--volumes", "--remove-orphans", check=False)


def _poll_port(cid: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.CalledProcessError, IndexError, ValueError):
            return published(cid, 8000)
        time.sleep(0.02)  # polling interval until Docker reports the mapping
    raise RuntimeError("no port mapping")


# --- report ---------------------------------------------------------------------------------


def judge(report: Report) -> None:
    http = report.http
    b = http.get("B: bare FastAPI (uvicorn)")
    live = http.get("Shipshape /live (gunicorn + middleware)")
    cold = http.get("Shipshape items ?limit=50, Postgres, cache cold")
    warm = http.get("Shipshape items ?limit=50, Postgres, cache warm")
    if b and live:
        report.target(
            "/live ≥ 85 % of baseline B's req/s",
            f"{live.rps / b.rps:.0%}",
            live.rps / b.rps >= 0.85,
        )
        report.target(
            "/live p99 ≤ 1.5 × B's p99",
            f"{live.p99_ms / b.p99_ms:.2f} ×",
            live.p99_ms <= 1.5 * b.p99_ms,
        )
    for label, items in (("cache cold", cold), ("cache warm", warm)):
        if b and items:
            report.target(
                f"items page (Postgres, {label}) ≥ 1/10 of B's req/s",
                f"1/{b.rps / items.rps:.1f}",
                items.rps * 10 >= b.rps,
            )
    if cold and warm:
        report.target(
            "warm-cache items ≥ 3 × cold req/s",
            f"{warm.rps / cold.rps:.2f} ×",
            warm.rps >= 3 * cold.rps,
        )
    rss = [
        float(v.split()[0])
        for k, v in report.facts.items()
        if k.startswith("RSS per worker under load")
    ]
    if rss:
        report.target("≤ 90 MB RSS per worker under load", f"{max(rss):.0f} MB", max(rss) <= 90)


def render(report: Report) -> str:
    b = report.http.get("B: bare FastAPI (uvicorn)")
    lines = [
        f"# Shipshape benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"load generator: {next(iter(report.http.values())).tool if report.http else 'n/a'}{' (quick run)' if report.quick else ''}.",
        "",
        "| Server | req/s | × B | p50 ms | p99 ms | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report.http.items():
        ratio = f"{r.rps / b.rps:.2f}" if b else ""
        lines.append(
            f"| {name} | {r.rps:,.0f} | {ratio} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.requests:,} | {r.errors} |"
        )
    lines += ["", "| Fact | Value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report.facts.items()]
    lines += ["", "| Target | Figure | Met |", "|---|---|---|"]
    for name, figure, met in report.targets:
        lines.append(
            f"| {name} | {figure} | {'met' if met else 'not met' if met is False else 'not measured'} |"
        )
    if report.notes:
        lines += ["", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n"


def chart(report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.notes.append("matplotlib not installed: no chart")
        return
    names = list(report.http)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [report.http[n].p50_ms for n in names], height=0.4, label="p50")
    ax.barh([i - 0.2 for i in y], [report.http[n].p99_ms for n in names], height=0.4, label="p99")
    ax.set_yticks(list(y), names)
    ax.set_xlabel("latency (ms)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s load runs, no cold build")
    parser.add_argument("--seconds", type=float, default=None, help="duration of each load run")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where latest.md and latency.png go"
    )
    args = parser.parse_args(argv)
    results: Path = args.output
    seconds = args.seconds or (1.0 if args.quick else 8.0)
    report = Report(quick=args.quick)
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        steps = [lambda: measure_http(report, seconds, tmp)]
        if docker_ok():
            steps += [
                lambda: measure_items(report, seconds, tmp),
                lambda: measure_image(report, args.quick, tmp),
                lambda: measure_start(report),
            ]
            if not args.quick:
                steps.append(lambda: measure_stack(report, tmp))
        else:
            report.notes.append(
                "Docker unavailable: items page, image and start figures not measured"
            )
        for step in steps:
            try:
                step()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                # One measurement failing (no network for the wheelhouse, a port taken)
                # leaves the others standing; the reason goes into the report.
                reason = getattr(exc, "stderr", None) or str(exc)
                report.notes.append(f"a measurement failed: {str(reason).strip()[-300:]}")
                log(f"failed: {str(reason).strip()[-300:]}")
    judge(report)
    chart(report, results / "latency.png")
    text = render(report)
    (results / "latest.md").write_text(text, encoding="utf-8")
    print(text)
    failed = sum(note.startswith("a measurement failed") for note in report.notes)
    if failed:
        log(f"{failed} measurement(s) failed: see the notes under the tables")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
