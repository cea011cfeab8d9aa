"""The production image, built from docker/Dockerfile.prod and run for real."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import jwt

from tests.container.conftest import BUILD_VERSION, GIT_COMMIT
from tests.docker_utils import (
    PROD_SECRETS,
    Container,
    docker,
    http_get,
    running,
    volume,
    wait_until,
)

SQLITE_PROD = {**PROD_SECRETS, "RUN_MIGRATIONS": "true", "WEB_CONCURRENCY": "1"}
OPERATOR = {"Authorization": f"Bearer {PROD_SECRETS['METRICS_TOKEN']}"}
SIZE_BUDGET_MB = 80  # runtime layers over the base image


def post_login(container: Container, username: str, password: str) -> tuple[int, Any]:
    """POST /api/v1/auth/token with a form; (status, JSON body or None)."""
    form = urllib.parse.urlencode({"username": username, "password": password}).encode()
    request = urllib.request.Request(container.url("/api/v1/auth/token"), data=form)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_runs_as_uid_10001_without_a_login_shell(prod_image: str) -> None:
    assert (
        docker("image", "inspect", "--format", "{{.Config.User}}", prod_image).stdout.strip()
        == "10001:10001"
    )
    assert docker("run", "--rm", prod_image, "id", "-u").stdout.strip() == "10001"
    passwd = docker("run", "--rm", prod_image, "getent", "passwd", "10001").stdout.strip()
    assert passwd.split(":")[0] == "appuser"
    assert passwd.endswith(":/usr/sbin/nologin")


def test_app_user_owns_only_its_data_directories(prod_image: str) -> None:
    script = (
        "touch /app/x 2>/dev/null && echo app-writable; "
        "touch /app/app/x 2>/dev/null && echo source-writable; "
        "touch /app/gunicorn_config.py 2>/dev/null && echo config-writable; "
        "for d in data uploads storage; do touch /app/$d/x || echo $d-not-writable; done; echo done"
    )
    assert docker("run", "--rm", prod_image, "sh", "-c", script).stdout.split() == ["done"]
    # Owner, group and mode exactly: the data directories are the app user's (not open to
    # everybody), the code and its folders root's.
    paths = ["/app", "/app/app", "/app/scripts", "/app/data", "/app/uploads", "/app/storage",
             "/srv/ui-static"]  # fmt: skip
    stat = docker("run", "--rm", prod_image, "stat", "-c", "%n %U:%G %a", *paths).stdout
    assert stat.splitlines() == [
        "/app root:root 755", "/app/app root:root 755", "/app/scripts root:root 755",
        "/app/data appuser:appuser 755", "/app/uploads appuser:appuser 755",
        "/app/storage appuser:appuser 755", "/srv/ui-static appuser:appuser 755",
    ]  # fmt: skip


def test_the_environment_variables_do_what_they_are_for(prod_image: str) -> None:
    """From any working directory the app imports from /app (PYTHONPATH), writes no
    bytecode (PYTHONDONTWRITEBYTECODE), and its output is not held back in a buffer
    (PYTHONUNBUFFERED); pip keeps no cache (PIP_NO_CACHE_DIR)."""
    probe = (
        "import sys, app; print(sys.dont_write_bytecode, sys.stdout.write_through, app.__file__)"
    )
    ran = docker("run", "--rm", "--workdir", "/", prod_image, "python", "-c", probe).stdout
    assert ran.split() == ["True", "True", "/app/app/__init__.py"]
    cache = docker("run", "--rm", prod_image, "python", "-m", "pip", "cache", "dir", check=False)
    assert cache.returncode != 0
    assert "cache is disabled" in cache.stderr


def test_labels_carry_the_build_facts(prod_image: str) -> None:
    labels = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Labels}}", prod_image).stdout
    )
    assert labels["org.opencontainers.image.version"] == BUILD_VERSION
    assert labels["org.opencontainers.image.revision"] == GIT_COMMIT
    assert labels["org.opencontainers.image.created"] == "2026-01-01T00:00:00Z"
    assert labels["version"] == BUILD_VERSION


def test_healthcheck_needs_no_curl_and_exposes_8000(prod_image: str) -> None:
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", prod_image).stdout
    )
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "/app/scripts/healthcheck.py"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["/app/scripts/docker-entrypoint.sh"]
    assert config["Cmd"] == ["prod"]
    assert (
        docker(
            "run", "--rm", prod_image, "sh", "-c", "command -v curl wget || echo none"
        ).stdout.strip()
        == "none"
    )


def test_turns_healthy_and_ready_on_sqlite(prod_image: str) -> None:
    # The image's interval is 15 s; a 1 s interval here checks the same command, sooner.
    options = ("--health-interval", "1s", "--health-start-period", "1s")
    with running(prod_image, env=SQLITE_PROD, options=options) as container:
        container.wait_ready()
        wait_until(
            lambda: container.inspect("{{.State.Health.Status}}") == "healthy", 60, "healthy"
        )
        assert http_get(container.url("/health")) == (200, {"status": "ok"})  # not an operator
        status, health = http_get(container.url("/health"), headers=OPERATOR)
        assert status == 200
        assert health["version"] == BUILD_VERSION
        assert health["git_commit"] == GIT_COMMIT
        assert health["environment"] == "production"


def test_no_compiler_headers_pip_cache_wheels_or_tests(prod_image: str) -> None:
    probe = (
        "for t in gcc cc g++ make strip ld; do command -v $t >/dev/null && echo tool:$t; done; "
        "ls -d /usr/include/* /usr/local/include/* 2>/dev/null | sed 's/^/headers:/'; "
        "ls -d /root/.cache/pip /app/tests /app/wheels 2>/dev/null | sed 's/^/leftover:/'; "
        "find / -xdev -type d -name tests -path '*-packages/*' 2>/dev/null "
        "| sed 's/^/package-tests:/'; "
        "find / -xdev \\( -name '*.whl' -o -name .git -o -name .venv -o -name .pytest_cache "
        "-o -name '.env*' -o -name .mypy_cache \\) -not -path '/proc/*' 2>/dev/null "
        "| sed 's/^/junk:/'; "
        "echo done"
    )

    def found(image: str) -> set[str]:
        return set(
            docker(
                "run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c", probe
            ).stdout.split()
        )

    base = found("python:3.11-slim")
    ours = found(prod_image)
    # Nothing beyond what the base image already ships (the official image carries Python's
    # own headers; a compiler or a dev package would add more).
    assert ours - base == set(), sorted(ours - base)
    assert not any(item.startswith("tool:") for item in ours)


def test_native_extensions_carry_no_symbol_tables(prod_image: str) -> None:
    """strip_wheels.py strips every native extension (--strip-unneeded): none keeps a
    symbol table, which is most of an unstripped library's size."""
    probe = (
        "import pathlib, sysconfig; packages = pathlib.Path(sysconfig.get_paths()['purelib']); "
        "found = list(packages.rglob('*.so')); "
        "print(len(found), *[p.name for p in found if b'.symtab' in p.read_bytes()])"
    )
    count, *unstripped = docker(
        "run", "--rm", "--entrypoint", "python", prod_image, "-c", probe
    ).stdout.split()
    assert int(count) > 5  # the native extensions are there (asyncpg, pydantic-core, ...)
    assert unstripped == []


def test_image_size_over_the_base_is_within_budget(prod_image: str) -> None:
    def size(image: str) -> int:
        return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)

    added_mb = (size(prod_image) - size("python:3.11-slim")) / 1e6
    print(f"\nruntime layers over python:3.11-slim: {added_mb:.1f} MB (budget {SIZE_BUDGET_MB} MB)")
    assert added_mb <= SIZE_BUDGET_MB


def test_runs_with_a_read_only_root_filesystem(prod_image: str) -> None:
    options = ("--read-only", "--tmpfs", "/tmp", "--tmpfs", "/app/data:uid=10001,gid=10001")
    with running(prod_image, env=SQLITE_PROD, options=options) as container:
        container.wait_ready()
        assert http_get(container.url("/live"))[0] == 200


def test_refuses_to_start_on_missing_secrets_with_one_line(prod_image: str) -> None:
    result = docker("run", "--rm", prod_image, check=False)
    assert result.returncode == 2  # the CLI's status for a configuration error
    assert result.stderr.strip() == (
        "config error: SECRET_KEY is required in production: set SECRET_KEY or SECRET_KEY_FILE"
    )


def test_secrets_from_files(prod_image: str, tmp_path) -> None:
    """Each *_FILE is read, and what the server does uses the file's value: the superuser
    logs in with the password from its file, and the token is signed with the JWT key from
    its file. No secret is in the container's environment."""
    files = {
        "secret_key": PROD_SECRETS["SECRET_KEY"],
        "jwt_secret_key": PROD_SECRETS["JWT_SECRET_KEY"],
        "admin_password": "from-a-file-" + PROD_SECRETS["METRICS_TOKEN"][:16],
    }
    for name, value in files.items():
        (tmp_path / name).write_text(value + "\n")  # editors add a newline: it is not the secret
        (tmp_path / name).chmod(0o644)
    tmp_path.chmod(0o755)
    env = {f"{name.upper()}_FILE": f"/run/secrets/{name}" for name in files}
    env |= {"RUN_MIGRATIONS": "true", "CREATE_SUPERUSER": "true", "WEB_CONCURRENCY": "1"}
    options = ("--volume", f"{tmp_path}:/run/secrets:ro")
    with running(prod_image, env=env, options=options) as container:
        container.wait_ready()
        status, body = post_login(container, "admin", files["admin_password"])
        environment = container.inspect("{{json .Config.Env}}")
    assert status == 200, body
    claims = jwt.decode(body["access_token"], files["jwt_secret_key"], algorithms=["HS256"])
    assert claims["sub"]
    assert not any(value in environment for value in files.values())


def test_gunicorn_applies_the_settings_from_the_environment(prod_image: str) -> None:
    """What gunicorn itself resolved, asked with its own --print-config through the image's
    entrypoint (the command line it serves with), and the values the master logs."""
    env = {
        **SQLITE_PROD,
        "WEB_CONCURRENCY": "3",
        "WORKER_TIMEOUT": "45",
        "GRACEFUL_TIMEOUT": "7",
        "KEEPALIVE": "80",
        "MAX_REQUESTS": "500",
        "MAX_REQUESTS_JITTER": "25",
    }
    env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    printed = docker("run", "--rm", *env_args, prod_image, "prod", "--print-config").stdout
    applied = {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in printed.splitlines())
        if value
    }
    assert {name: applied[name] for name in APPLIED} == APPLIED
    with running(prod_image, env=env) as container:
        container.wait_ready()
        logged = next(
            r["gunicorn"] for r in container.json_logs() if r["message"] == "gunicorn settings"
        )

        def three_workers() -> list[dict[str, Any]] | None:
            booted = [r for r in container.json_logs() if r["message"].startswith("Booting worker")]
            return booted if len(booted) == 3 else None

        wait_until(three_workers, 60, "three workers to boot")
    assert logged["worker_max_memory_mb"] == 200  # the default: recycling by memory


APPLIED = {
    "bind": "['0.0.0.0:8000']",
    "workers": "3",
    "worker_class": "app.core.server.DrainingUvicornWorker",
    "timeout": "45",
    "graceful_timeout": "7",
    "keepalive": "80",
    "max_requests": "500",
    "max_requests_jitter": "25",
    "preload_app": "True",
    "worker_tmp_dir": "/dev/shm",
}


def test_the_running_server_closes_idle_connections_and_recycles_by_count(
    prod_image: str,
) -> None:
    """Observed from outside: an idle keep-alive connection is closed after KEEPALIVE
    seconds, and with MAX_REQUESTS set the worker is replaced after that many requests."""
    env = {**SQLITE_PROD, "KEEPALIVE": "2", "MAX_REQUESTS": "5", "MAX_REQUESTS_JITTER": "0"}
    with running(prod_image, env=env) as container:
        container.wait_ready()
        with socket.create_connection(("127.0.0.1", container.port()), timeout=30) as idle:
            idle.sendall(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += idle.recv(4096)
            answered = time.monotonic()
            while idle.recv(4096):  # the rest of the answer, then the server's close
                pass
            idle_for = time.monotonic() - answered
        assert answer.startswith(b"HTTP/1.1 200")
        assert 1.0 <= idle_for <= 10.0, idle_for  # KEEPALIVE=2, not the default 75

        def booted() -> int:
            return sum(r["message"].startswith("Booting worker") for r in container.json_logs())

        assert booted() == 1
        for _ in range(8):
            http_get(container.url("/live"))
        wait_until(lambda: booted() >= 2, 30, "the worker to be replaced after 5 requests")


def test_worker_count_follows_the_cpu_limit(prod_image: str) -> None:
    env = {**SQLITE_PROD, "WEB_CONCURRENCY": "0", "MAX_WORKERS": "8"}
    with running(prod_image, env=env, options=("--cpus", "1")) as container:
        container.wait_ready()
        settings = next(
            r["gunicorn"] for r in container.json_logs() if r["message"] == "gunicorn settings"
        )
    assert settings["cpus"] == 1
    assert settings["workers"] == 3  # 2 x 1 CPU + 1


def test_every_log_line_is_json(prod_image: str) -> None:
    with running(prod_image, env=SQLITE_PROD) as container:
        container.wait_ready()
        http_get(container.url("/api/v1/openapi.json"))  # probes are not access-logged
        lines = [line for line in container.logs().splitlines() if line.strip()]
    # From the entrypoint's first line to the access log (the preparation included).
    assert all(line.startswith("{") for line in lines), lines
    assert any('"logger":"app.access"' in line for line in lines)


def test_docker_stop_finishes_the_in_flight_request_and_exits_0(prod_image: str) -> None:
    env = {**SQLITE_PROD, "GRACEFUL_TIMEOUT": "10"}
    with running(prod_image, env=env) as container:
        container.wait_ready()
        body = b"username=nobody&password=wrong-password"
        request = (
            b"POST /api/v1/auth/token HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        with socket.create_connection(("127.0.0.1", container.port()), timeout=20) as conn:
            conn.sendall(request + body[:10])  # the request is now in flight
            stopped: dict[str, float] = {}

            def stop() -> None:
                started = time.monotonic()
                docker("stop", "--time", "15", container.id)
                stopped["seconds"] = time.monotonic() - started

            stopper = threading.Thread(target=stop)
            stopper.start()
            wait_until(
                lambda: "Handling signal: term" in container.logs(), 15, "SIGTERM to reach gunicorn"
            )
            conn.sendall(body[10:])
            response = b""
            while not response.endswith(b"}"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                response += chunk
            stopper.join(timeout=30)
        assert response.startswith(b"HTTP/1.1 401"), response
        assert b"incorrect username or password" in response
        assert container.inspect("{{.State.ExitCode}}") == "0", container.logs()[-2000:]
        assert stopped["seconds"] < 15


def test_migrate_mode_brings_the_schema_to_head(prod_image: str) -> None:
    with volume() as data:
        mount = ("--volume", f"{data}:/app/data")
        env_args = [arg for k, v in PROD_SECRETS.items() for arg in ("--env", f"{k}={v}")]
        migrated = docker("run", "--rm", *mount, *env_args, prod_image, "migrate", check=False)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        code = (
            "from sqlalchemy import text\n"
            "from app.db.migrate import head_revision\n"
            "async def main():\n"
            "    async with db.engine.connect() as c:\n"
            "        q = text('SELECT version_num FROM alembic_version')\n"
            "        v = (await c.execute(q)).scalar()\n"
            "    print('at-head' if v == head_revision() else f'behind:{v}')\n"
            "    await db.dispose()\n"
            "run(main())\n"
        )
        shell = docker("run", "--rm", *mount, *env_args, prod_image, "shell", "-c", code)
        assert shell.stdout.strip().splitlines()[-1] == "at-head"


def test_unknown_mode_passes_through(prod_image: str) -> None:
    assert (
        docker("run", "--rm", prod_image, "echo", "passed", "through").stdout.strip()
        == "passed through"
    )
    assert docker("run", "--rm", prod_image, "python", "-c", "print(6 * 7)").stdout.strip() == "42"


def test_waiting_for_an_absent_database_ends_with_a_clear_message(prod_image: str) -> None:
    started = time.monotonic()
    result = docker(
        "run", "--rm",
        "--env", "DATABASE_URL=postgresql://app:pw@127.0.0.1:9/app",
        "--env", "DB_WAIT_TIMEOUT=2",
        *[arg for k, v in PROD_SECRETS.items() for arg in ("--env", f"{k}={v}")],
        prod_image, "migrate",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "database not reachable after 2s" in result.stderr
    assert time.monotonic() - started < 30


def _counter(metrics_text: str, route: str) -> float:
    prefix = f'http_requests_total{{method="GET",route="{route}",status="200"}} '
    return sum(
        float(line[len(prefix) :]) for line in metrics_text.splitlines() if line.startswith(prefix)
    )


def test_metrics_add_up_across_gunicorn_workers(prod_image: str) -> None:
    import urllib.request

    def scrape(url: str) -> str:
        request = urllib.request.Request(url, headers=OPERATOR)  # noqa: S310 - loopback
        return urllib.request.urlopen(request, timeout=5).read().decode()  # noqa: S310

    env = {**SQLITE_PROD, "WEB_CONCURRENCY": "3"}
    with running(prod_image, env=env) as container:
        container.wait_ready()
        assert http_get(container.url("/metrics"))[0] == 401  # the token is required
        before = scrape(container.url("/metrics"))
        for _ in range(30):
            assert http_get(container.url("/live"))[0] == 200
        # Each worker writes its requests' samples within a second (app/core/metrics.py,
        # Deferred); then, whichever worker answers the scrape, it reports all of them.
        wait_until(
            lambda: (
                _counter(scrape(container.url("/metrics")), "/live") - _counter(before, "/live")
                >= 30
            ),
            60,
            "every worker's /live requests in a scrape",
        )
        scrapes = [scrape(container.url("/metrics")) for _ in range(6)]
    assert {_counter(text, "/live") - _counter(before, "/live") for text in scrapes} == {30.0}
    assert (
        'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/live"}' in scrapes[-1]
    )
    assert 'jobs{state="queued"} 0.0' in scrapes[-1]


def test_a_login_burst_under_the_memory_limit_leaves_other_users_served(prod_image: str) -> None:
    """The attack: 2 x 11 concurrent failed logins (what nginx lets through from one address)
    against the 512 MiB production limit OOM-killed the workers, and other users got 502s."""
    import concurrent.futures
    import secrets

    password = secrets.token_urlsafe(16)
    env = {**SQLITE_PROD, "WEB_CONCURRENCY": "3", "CREATE_SUPERUSER": "true",
           "ADMIN_PASSWORD": password}  # fmt: skip
    options = ("--memory", "512m", "--memory-swap", "512m")
    with running(prod_image, env=env, options=options) as container:
        container.wait_ready()

        status, token = post_login(container, "admin", password)
        assert status == 200
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
            logins = [
                pool.submit(post_login, container, f"nobody{n}", "wrong password")
                for n in range(22)
            ]  # other names each time: the per-account throttle does not step in first
            reads = [
                pool.submit(http_get, container.url("/api/v1/items"), 30, auth) for _ in range(14)
            ]
            login_statuses = sorted(f.result()[0] for f in logins)
            read_statuses = [f.result()[0] for f in reads]
        assert read_statuses == [200] * 14, read_statuses
        assert set(login_statuses) <= {401, 429, 503}, login_statuses
        assert container.inspect("{{.State.OOMKilled}}") == "false"
        assert "SIGKILL" not in container.logs()
        assert http_get(container.url("/ready"))[0] == 200


def test_no_setuid_or_setgid_programs(prod_image: str) -> None:
    found = docker(
        "run", "--rm", "--entrypoint", "sh", prod_image, "-c",
        "find / -xdev -type f -perm /6000 2>/dev/null; echo done",
    ).stdout.split()  # fmt: skip
    assert found == ["done"], found
