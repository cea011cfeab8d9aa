"""Config tier: render the compose overlays with the example env files (CLI only)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools.compose_env import MONITORING_SECRETS, SERVICE_SECRETS

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = {
    "dev": ["app", "worker", "db", "redis"],
    "prod": ["app", "worker", "db", "redis", "nginx", "backup"],
}
EXAMPLE = {
    "dev": ".env.dev.example",
    "prod": ".env.prod.example",
    "staging": ".env.staging.example",
}


def compose(overlay: str, env_file: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    # Only the env file may count: the shell's variables win over it in interpolation.
    documented = set()
    for example in EXAMPLE.values():
        documented |= set(
            re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / example).read_text(), re.M)
        )
    env = {k: v for k, v in os.environ.items() if k not in documented}
    env["ENV_FILE"] = str(env_file)
    command = [
        "docker",
        "compose",
        "--env-file",
        str(env_file),
        "-f",
        "docker-compose.yml",
        "-f",
        f"docker-compose.{overlay}.yml",
        *args,
    ]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def rendered(overlay: str, env_name: str, *profiles: str) -> dict[str, Any]:
    """The overlay as compose renders it with the example env file (a fresh copy each time:
    the rendering itself runs once per test session, as the files do not change in one)."""
    return json.loads(_rendering(overlay, env_name, profiles))


@functools.cache
def _rendering(overlay: str, env_name: str, profiles: tuple[str, ...]) -> str:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = compose(overlay, ROOT / EXAMPLE[env_name], *flags, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return result.stdout


PROFILE_SERVICES = {"tools": {"pgadmin", "mailcatcher"}, "certbot": {"certbot"}}


@pytest.mark.parametrize(
    ("overlay", "env_name", "profile"),
    [("dev", "dev", "tools"), ("prod", "prod", "certbot"), ("prod", "staging", "certbot")],
)
def test_every_overlay_renders_with_its_example(overlay: str, env_name: str, profile: str) -> None:
    """Each overlay renders with its example env file; its profile's services are there only
    when the profile is asked for."""
    config = rendered(overlay, env_name)
    services = set(config["services"])
    one_shot = {"prod": ONE_SHOT, "dev": set()}[overlay]
    assert services == set(LONG_RUNNING[overlay]) | one_shot
    with_profile = rendered(overlay, env_name, profile)["services"]
    assert set(with_profile) - services == PROFILE_SERVICES[profile]
    for name, service in with_profile.items():
        assert service["image"] == IMAGES.get(name, IMAGES[overlay]), name
        if name in PROFILE_SERVICES[profile]:
            assert service["profiles"] == [profile], name


# The image of each service with the example env files: pinned, official where not ours.
IMAGES = {
    "dev": "shipshape-dev:local",
    "prod": "shipshape:local",
    "db": "postgres:15-alpine",
    "backup": "postgres:15-alpine",
    "redis": "redis:7-alpine",
    "nginx": "nginx:1.27-alpine",
    "certbot": "certbot/certbot:v2.1.0",
    "tls-bootstrap": "certbot/certbot:v2.1.0",
    "pgadmin": "dpage/pgadmin4:8.12",
    "mailcatcher": "axllent/mailpit:v1.20",
}


@pytest.mark.parametrize(
    ("overlay", "variable"),
    [
        ("dev", "DB_PASSWORD"),
        ("dev", "SECRET_KEY"),
        ("dev", "REDIS_PASSWORD"),
        ("prod", "BASE_URL"),
        ("prod", "DOMAIN"),
        ("prod", "SSL_EMAIL"),
    ],
)
def test_a_missing_required_value_fails_naming_it(
    tmp_path: Path, overlay: str, variable: str
) -> None:
    source = (ROOT / EXAMPLE[overlay]).read_text().splitlines()
    env_file = tmp_path / "env"
    env_file.write_text(
        "\n".join(line for line in source if not line.startswith(f"{variable}=")) + "\n"
    )
    result = compose(overlay, env_file, "config", "--quiet")
    assert result.returncode != 0
    assert f"required variable {variable} is missing a value" in result.stderr


# Where each compose file requires a value (`${VAR:?message}`: compose stops before any
# container starts), counted per place; an optional default (`:-`) in one of them would let
# a stack start without it.
REQUIRED = {
    "docker-compose.yml": {"BASE_URL": 1},
    "docker-compose.dev.yml": {"DB_PASSWORD": 2, "REDIS_PASSWORD": 2, "SECRET_KEY": 1,
                               "JWT_SECRET_KEY": 1, "ADMIN_PASSWORD": 1},
    "docker-compose.prod.yml": {"BASE_URL": 1, "DOMAIN": 4, "SSL_EMAIL": 1},
}  # fmt: skip


def test_exactly_these_values_are_required_where_they_are_used() -> None:
    for name, expected in REQUIRED.items():
        lines = (ROOT / name).read_text().splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        found: dict[str, int] = {}
        for var in re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]*\bis required\b", code):
            found[var] = found.get(var, 0) + 1
        assert found == expected, name


def _published(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: svc.get("ports", []) for name, svc in config["services"].items() if svc.get("ports")
    }


def test_prod_publishes_only_nginx_http_and_https() -> None:
    config = rendered("prod", "prod", "certbot")
    published = _published(config)
    assert set(published) == {"nginx"}
    assert sorted(p["target"] for p in published["nginx"]) == [80, 443]
    assert [(p["host_ip"], p["published"], p["target"]) for p in published["nginx"]] == [
        ("127.0.0.1", "80", 80), ("127.0.0.1", "443", 443)
    ]  # fmt: skip
    # Each service on exactly the networks it needs: the stores only on the internal one.
    networks = {
        name: sorted(service.get("networks") or {}) or service.get("network_mode")
        for name, service in config["services"].items()
    }
    assert networks == {
        "app": ["backend", "frontend"], "worker": ["backend", "frontend"], "db": ["backend"],
        "redis": ["backend"], "backup": ["backend"], "nginx": ["frontend"],
        "certbot": ["frontend"], "tls-bootstrap": "none",
    }  # fmt: skip
    assert {n: (v["driver"], v.get("internal", False)) for n, v in config["networks"].items()} == {
        "frontend": ("bridge", False), "backend": ("bridge", True)
    }  # fmt: skip
    app_env = config["services"]["app"]["environment"]
    assert app_env.get("DEBUG", "false") == "false"
    assert app_env["ENVIRONMENT"] == "production"


def test_dev_binds_to_loopback_and_needs_no_tls_material() -> None:
    config = rendered("dev", "dev", "tools")
    published = {
        name: [(p["host_ip"], p["published"], p["target"]) for p in ports]
        for name, ports in _published(config).items()
    }
    assert published == {
        "app": [("127.0.0.1", "8000", 8000)], "db": [("127.0.0.1", "5432", 5432)],
        "redis": [("127.0.0.1", "6379", 6379)], "pgadmin": [("127.0.0.1", "5050", 80)],
        "mailcatcher": [("127.0.0.1", "8025", 8025)],
    }  # fmt: skip
    dumped = json.dumps(config)
    assert "letsencrypt" not in dumped
    assert "nginx" not in config["services"]
    assert "certbot" not in config["services"]


# Every service's healthcheck, exactly: a check that cannot fail (`exit 0`, `true`) or looks
# at something else fails here; tests/stack shows each one fail when its service is down.
HEALTHCHECKS = {
    "app": ["CMD", "python", "/app/scripts/healthcheck.py"],
    "worker": ["CMD", "python", "-m", "app", "worker-ping", "--timeout", "10"],
    "db": ["CMD-SHELL", 'pg_isready -U "$${POSTGRES_USER}" -d "$${POSTGRES_DB}"'],
    "redis": ["CMD", "/bin/sh", "/opt/shipshape/redis-entrypoint.sh", "ping"],
    "nginx": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1/nginx-health || exit 1"],
    "backup": ["CMD-SHELL", "pg_isready --quiet"],
    "certbot": [
        "CMD-SHELL",
        'openssl x509 -checkend 604800 -noout -in "/etc/letsencrypt/live/$$DOMAIN/fullchain.pem"',
    ],
    "pgadmin": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/misc/ping"],
    "mailcatcher": ["CMD", "/mailpit", "readyz"],
}
# What each service waits for before it starts, and how.
DEPENDS_ON = {
    "app": {"db": "service_healthy", "redis": "service_healthy"},
    "worker": {"db": "service_healthy", "redis": "service_healthy"},
    "nginx": {"app": "service_healthy", "tls-bootstrap": "service_completed_successfully"},
    "backup": {"db": "service_healthy"},
    "certbot": {"nginx": "service_healthy"},
    "pgadmin": {"db": "service_healthy"},
}
# The limits with the example env files' values (CPUs, bytes, processes).
LIMITS = {
    "app": {"cpus": 1, "memory": "536870912", "pids": 256},
    "worker": {"cpus": 1, "memory": "536870912", "pids": 256},
    "db": {"cpus": 1, "memory": "1073741824", "pids": 512},
    "redis": {"cpus": 0.5, "memory": "536870912", "pids": 64},
    "nginx": {"cpus": 0.5, "memory": "134217728", "pids": 128},
    "backup": {"cpus": 0.5, "memory": "268435456", "pids": 64},
    "certbot": {"cpus": 0.5, "memory": "268435456", "pids": 64},
    "tls-bootstrap": {"cpus": 0.5, "memory": "67108864", "pids": 32},
}
# tls-bootstrap is a job that runs once before nginx: done when it exited 0.
ONE_SHOT = {"tls-bootstrap"}


@pytest.mark.parametrize(("overlay", "profile"), [("dev", "tools"), ("prod", "certbot")])
def test_every_service_is_healthchecked_and_waits_for_healthy_dependencies(
    overlay: str, profile: str
) -> None:
    services = rendered(overlay, overlay, profile)["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert "healthcheck" not in service, name
            assert service["restart"] == "no", name
            assert service["deploy"]["resources"]["limits"] == LIMITS[name], name
            continue
        assert service["healthcheck"]["test"] == HEALTHCHECKS[name], name
        assert not service["healthcheck"].get("disable"), name
        if name in LIMITS:
            assert service["deploy"]["resources"]["limits"] == LIMITS[name], name
        depends = {d: v["condition"] for d, v in (service.get("depends_on") or {}).items()}
        assert depends == DEPENDS_ON.get(name, {}), name
        # A refused certificate request must not be retried in a tight loop forever.
        expected = "on-failure:5" if name == "certbot" else "unless-stopped"
        assert service["restart"] == expected, name


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_long_running_services_are_healthchecked_limited_rotated_hardened(overlay: str) -> None:
    config = rendered(overlay, overlay)
    for name in LONG_RUNNING[overlay]:
        svc = config["services"][name]
        assert svc["healthcheck"]["test"] == HEALTHCHECKS[name], name
        assert svc["restart"] == "unless-stopped", name
        assert svc["deploy"]["resources"]["limits"] == LIMITS[name], name
        assert svc["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "3"},
        }, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc["init"] is True, name
        for mount in svc.get("volumes", []):
            if mount["type"] == "volume":
                assert mount["source"], name  # named, never anonymous
        depends = {d: v["condition"] for d, v in (svc.get("depends_on") or {}).items()}
        assert depends == {k: v for k, v in DEPENDS_ON.get(name, {}).items()
                           if k in config["services"]}, name  # fmt: skip
    # Room for parallel query workers' shared memory (Docker's default is 64 MB).
    assert config["services"]["db"]["shm_size"] == "268435456"
    for name in ("db", "redis"):
        volumes = {m["target"]: m for m in config["services"][name]["volumes"]}
        data = volumes["/var/lib/postgresql/data" if name == "db" else "/data"]
        assert (data["type"], data["source"]) == (
            "volume",
            f"{name.replace('db', 'postgres')}_data",
        )


@pytest.mark.parametrize(
    ("overlay", "env_name"), [("dev", "dev"), ("prod", "prod"), ("prod", "staging")]
)
def test_the_app_services_take_every_setting_from_the_env_file(overlay: str, env_name: str) -> None:
    """The env file is the one source of truth: where compose also sets a variable of the
    app, its value is the env file's (a value written into a compose file wins over the
    env file silently). The production app's one exception is the folder nginx serves."""
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / EXAMPLE[env_name]).read_text(),
                              re.M))  # fmt: skip
    names = {"dev": "development", "prod": "production", "staging": "staging"}
    assert example["ENVIRONMENT"] == names[env_name]
    services = rendered(overlay, env_name)["services"]
    for name in ("app", "worker"):
        environment = services[name]["environment"]
        contradicting = {k: v for k, v in environment.items() if k in example and example[k] != v}
        exceptions = (
            {"UI_STATIC_DIR": "/srv/ui-static"} if (overlay, name) == ("prod", "app") else {}
        )
        assert contradicting == exceptions, name
        assert len(set(environment) & set(example)) > 100, name  # the env file reached it


def test_prod_runs_replicated_gunicorn_behind_nginx() -> None:
    services = rendered("prod", "prod")["services"]
    assert services["app"]["command"] == ["prod"]  # gunicorn, not the reloading dev server
    assert services["worker"]["command"] == ["worker"]
    assert services["app"]["deploy"]["replicas"] == 2  # one restarts, the other serves
    assert services["app"]["build"]["dockerfile"] == "docker/Dockerfile.prod"
    nginx = services["nginx"]["environment"]
    assert nginx["APP_UPSTREAM"] == "app:8000"
    assert services["app"]["environment"]["ENVIRONMENT"] == "production"


def test_connection_facing_services_set_an_open_files_limit() -> None:
    services = rendered("prod", "prod")["services"]
    for name in ("app", "nginx"):
        assert services[name]["ulimits"]["nofile"] == {"soft": 16384, "hard": 16384}, name


def test_prod_app_is_read_only_and_outlives_gunicorn_graceful_timeout() -> None:
    config = rendered("prod", "prod")
    app = config["services"]["app"]
    assert app["read_only"] is True
    assert any(t.startswith("/tmp") for t in app["tmpfs"])
    assert config["services"]["nginx"]["read_only"] is True
    found = re.search(r"^GRACEFUL_TIMEOUT=(\d+)", (ROOT / ".env.prod.example").read_text(), re.M)
    assert found is not None
    graceful = int(found[1])
    grace = app["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > graceful


def test_redis_has_a_password_persistence_and_an_eviction_policy() -> None:
    redis = rendered("prod", "prod")["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    # The cache's keys (all with a TTL) are evicted, never the job queue's (none have one).
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    # The password is a file that the entrypoint turns into `requirepass` in a config file.
    assert redis["entrypoint"][-1] == "/opt/shipshape/redis-entrypoint.sh"
    assert redis["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"


@pytest.mark.parametrize("env_name", ["prod", "staging"])
def test_prod_services_get_only_their_secrets_and_only_as_files(env_name: str) -> None:
    config = rendered("prod", env_name, "certbot")
    folder = ROOT / "secrets" / env_name
    for name, expected in SERVICE_SECRETS.items():
        service = config["services"][name]
        mounted = {secret["source"] for secret in service.get("secrets", [])}
        assert mounted == expected, name
        environment = service.get("environment") or {}
        for secret in expected:
            variable = {"db": "POSTGRES_PASSWORD"}.get(name, secret.upper())
            if name == "backup":
                variable = "DB_PASSWORD"
            assert environment.get(f"{variable}_FILE") == f"/run/secrets/{secret}", (name, secret)
        # No secret value travels as a variable: each one is empty or absent.
        for variable in (*(s.upper() for s in SERVICE_SECRETS["app"]), "POSTGRES_PASSWORD",
                         "PGPASSWORD", "REDISCLI_AUTH"):  # fmt: skip
            assert not environment.get(variable), (name, variable)
        assert "requirepass" not in json.dumps(service.get("command")), name
    for secret in SERVICE_SECRETS["app"]:
        assert config["secrets"][secret]["file"] == str(folder / secret)


@pytest.mark.parametrize(
    ("overlay", "env_name"), [("dev", "dev"), ("prod", "prod"), ("prod", "staging")]
)
def test_every_compose_variable_is_documented_in_the_env_example(
    overlay: str, env_name: str
) -> None:
    used: set[str] = set()
    for name in ("docker-compose.yml", f"docker-compose.{overlay}.yml"):
        lines = (ROOT / name).read_text().splitlines()
        text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        used |= set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / EXAMPLE[env_name]).read_text(), re.M)
    )
    assert used - documented - {"ENV_FILE"} == set()


def test_fluentd_overlay_sends_every_service_to_the_collector() -> None:
    env_file = ROOT / EXAMPLE["prod"]
    result = compose(
        "prod", env_file, "-f", "docker-compose.logging.yml", "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in ("app", "worker", "db", "redis", "nginx", "backup", "tls-bootstrap"):
        logging = services[name]["logging"]
        assert logging["driver"] == "fluentd", name
        assert logging["options"]["fluentd-address"] == "localhost:24224"
        assert logging["options"]["tag"] == "shipshape.{{.Name}}"
        # Never block a service's output on the collector (nor stop it when it is down).
        assert logging["options"]["fluentd-async"] == "true"
    used = set(
        re.findall(
            r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.logging.yml").read_text()
        )
    )
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", env_file.read_text(), re.M))
    assert used <= documented


def _stack_config(stack_file: str, env: dict[str, str]) -> Any:
    """A Swarm stack file as compose reads it (`docker stack deploy` takes the same file)."""
    result = subprocess.run(
        ["docker", "compose", "-f", stack_file, "config", "--format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_swarm_stack_file_updates_safely() -> None:
    env = {
        **os.environ,
        "APP_TAG": "1.0.0",
        "DOMAIN": "example.test",
        "BASE_URL": "https://example.test",
    }
    config = _stack_config("docker-stack.yml", env)
    services = config["services"]
    app = services["app"]["deploy"]
    assert app["replicas"] == 2
    # One task at a time, the new one started (and healthy for `monitor`) before an old one
    # stops; a task that fails rolls the service back, again one at a time, start-first.
    assert app["update_config"] == {
        "parallelism": 1, "order": "start-first", "failure_action": "rollback",
        "monitor": "20s", "delay": "5s",
    }  # fmt: skip
    assert app["rollback_config"] == {"parallelism": 1, "order": "start-first", "monitor": "10s"}
    assert services["worker"]["deploy"]["update_config"] == {
        "parallelism": 1, "order": "start-first", "failure_action": "rollback", "monitor": "20s",
    }  # fmt: skip
    for name, service in services.items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        # The same limits as compose's (Swarm has no pids limit in a stack file).
        limits = {k: v for k, v in LIMITS[name].items() if k != "pids"}
        assert service["deploy"]["resources"]["limits"] == limits, name
        if name in ONE_SHOT:  # a job that runs once: done when it exited 0
            assert service["healthcheck"] == {"disable": True}
            assert service["deploy"]["restart_policy"]["condition"] == "on-failure"
            continue
        # The same checks as compose's, so a stack is as healthy as its compose twin.
        assert service["healthcheck"]["test"] == HEALTHCHECKS[name], name
    assert {p["mode"] for p in services["nginx"]["ports"]} == {"host"}
    assert all(secret.get("external") for secret in config["secrets"].values())
    # No depends_on in Swarm: the worker waits for its broker with wait-for-it.
    assert services["worker"]["command"] == [
        "/app/scripts/wait-for-it.sh", "redis:6379", "-t", "120",
        "--", "/app/scripts/docker-entrypoint.sh", "worker",
    ]  # fmt: skip
    environment = services["app"]["environment"]
    assert environment["SECRET_KEY_FILE"] == "/run/secrets/secret_key"
    assert "SECRET_KEY" not in environment
    assert (
        environment["RUN_MIGRATIONS"] == "true"
    )  # the entrypoint's advisory lock: once per deploy


def test_dev_overlay_mounts_the_source_keeps_the_venv_and_offers_tools() -> None:
    config = rendered("dev", "dev", "tools")
    services = config["services"]
    for name in ("app", "worker"):
        mounts = [
            (m["type"], Path(m["source"]) if m["type"] == "bind" else m.get("source"),
             m["target"], bool(m.get("read_only")))
            for m in services[name]["volumes"]
        ]  # fmt: skip
        # The source tree, writable (migrations are written into it), over the image's copy;
        # nothing hides a part of it (the venv is outside, in /opt/venv).
        assert sorted(mounts, key=str) == sorted([
            ("bind", ROOT, "/app", False),
            ("volume", "uploads", "/app/uploads", False),
            ("volume", "storage", "/app/storage", False),
        ], key=str), name  # fmt: skip
    # The virtual environment is outside the mounted tree, so the mount cannot hide it.
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in (ROOT / "docker" / "Dockerfile.dev").read_text()
    assert {"pgadmin", "mailcatcher"} <= set(services)
    assert services["app"]["command"] == ["dev"]  # uvicorn --reload (docker-entrypoint.sh)
    assert services["app"]["build"]["dockerfile"] == "docker/Dockerfile.dev"
    # Named volumes that compose creates and keeps: none points at something outside it.
    assert all(not volume.get("external") for volume in config["volumes"].values())
    assert services["pgadmin"]["profiles"] == ["tools"]
    db_volumes = [m for m in services["db"]["volumes"] if m["target"] == "/var/lib/postgresql/data"]
    assert db_volumes[0]["type"] == "volume"
    assert db_volumes[0]["source"]
    assert "pgadmin" not in rendered("dev", "dev")["services"]  # only with the profile


# Paths the service images declare as VOLUME: each must be mounted (named volume or tmpfs),
# or every new container leaves an anonymous volume behind.
IMAGE_VOLUMES = {
    "db": ["/var/lib/postgresql/data"],  # postgres
    "backup": ["/var/lib/postgresql/data"],  # postgres (for pg_dump)
    "redis": ["/data"],  # redis
    "certbot": ["/etc/letsencrypt", "/var/lib/letsencrypt"],  # certbot/certbot
    "tls-bootstrap": ["/etc/letsencrypt", "/var/lib/letsencrypt"],  # certbot/certbot
}


def test_image_volumes_are_all_mounted_so_none_is_anonymous() -> None:
    services = rendered("prod", "prod", "certbot")["services"]
    for name, paths in IMAGE_VOLUMES.items():
        mounted = {m["target"] for m in services[name].get("volumes", []) if m.get("source")}
        mounted |= {t.split(":")[0] for t in services[name].get("tmpfs", [])}
        assert set(paths) <= mounted, name


def test_dev_worker_is_never_pulled_and_restarts_on_code_changes() -> None:
    """The faults: the first `make dev` tried to pull the worker's image from a registry, and
    the worker kept running old code after an edit."""
    worker = rendered("dev", "dev")["services"]["worker"]
    assert worker["pull_policy"] == "never"
    assert worker["image"] == rendered("dev", "dev")["services"]["app"]["image"]
    assert worker["command"][:2] == ["watchfiles", "--filter"]
    assert "/app/scripts/docker-entrypoint.sh worker" in worker["command"]


MONITORING_LIMITS = {
    "prometheus": {"cpus": 0.5, "memory": "536870912", "pids": 128},
    "alertmanager": {"cpus": 0.25, "memory": "134217728", "pids": 64},
    "postgres-exporter": {"cpus": 0.25, "memory": "67108864", "pids": 32},
    "redis-exporter": {"cpus": 0.25, "memory": "67108864", "pids": 32},
    "nginx-exporter": {"cpus": 0.25, "memory": "67108864", "pids": 32},
    "monitoring-role": {"cpus": 0.25, "memory": "67108864", "pids": 32},
    "redis-exporter-config": {"cpus": 0.25, "memory": "33554432", "pids": 16},
}
MONITORING_ONE_SHOT = {"monitoring-role", "redis-exporter-config"}


def test_monitoring_overlay_is_hardened_private_and_bounded() -> None:
    """Every monitoring service: no capabilities, no privilege gain, a read-only root, not
    root (but the one-shot that writes the exporter's password file, without capabilities),
    limits and rotated logs; only Prometheus and Alertmanager published, on 127.0.0.1; the
    secrets as files, each where it is used; Prometheus's storage bounded."""
    env_file = ROOT / EXAMPLE["prod"]
    result = compose(
        "prod", env_file, "-f", "docker-compose.monitoring.yml", "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    for name, limits in MONITORING_LIMITS.items():
        service = services[name]
        assert service["deploy"]["resources"]["limits"] == limits, name
        assert service["cap_drop"] == ["ALL"], name
        assert service.get("cap_add") is None, name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["read_only"] is True, name
        assert service["user"] == {
            "redis-exporter-config": "0:0",
            "monitoring-role": "70:70",
            "redis-exporter": "59000:59000",
        }.get(name, "65534:65534")
        assert service["restart"] == ("no" if name in MONITORING_ONE_SHOT else "unless-stopped")
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "3"}, name
        mounted = {secret["source"] for secret in service.get("secrets", [])}
        assert mounted == MONITORING_SECRETS[name] if name in MONITORING_SECRETS else set()
        assert ":latest" not in service["image"], name
    published = {
        name: [(p["host_ip"], p["target"]) for p in service.get("ports", [])]
        for name, service in services.items()
        if name in MONITORING_LIMITS and service.get("ports")
    }
    assert published == {"prometheus": [("127.0.0.1", 9090)], "alertmanager": [("127.0.0.1", 9093)]}
    assert "--storage.tsdb.retention.time=15d" in services["prometheus"]["command"]
    assert "--storage.tsdb.retention.size=5GB" in services["prometheus"]["command"]
    # The exporters reach what they read and nothing else; the backend stays internal.
    assert set(services["postgres-exporter"]["networks"]) == {"backend"}
    assert set(services["redis-exporter"]["networks"]) == {"backend"}
    assert services["redis-exporter-config"]["network_mode"] == "none"
    assert set(services["alertmanager"]["networks"]) == {"monitoring"}
    assert config["networks"]["backend"]["internal"] is True
    # The worker's /metrics is scraped with the app's token: it gets that one secret more.
    worker = services["worker"]
    assert {s["source"] for s in worker["secrets"]} == SERVICE_SECRETS["worker"] | {"metrics_token"}
    assert worker["environment"]["METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    assert config["secrets"]["alert_webhook_url"]["file"] == str(
        ROOT / "secrets" / "prod" / "alert_webhook_url"
    )


def test_swarm_monitoring_stack_is_the_compose_overlay_on_swarm() -> None:
    """docker-stack.monitoring.yml runs the services of the compose overlay with the same
    images, users, limits (Swarm has no pids limit), secrets and files, on the service stack's
    networks, and publishes nothing: Swarm cannot bind a port to 127.0.0.1."""
    env = {**os.environ, "STACK_NAME": "shop"}
    stack = _stack_config("docker-stack.monitoring.yml", env)
    overlay = json.loads(compose(
        "prod", ROOT / EXAMPLE["prod"], "-f", "docker-compose.monitoring.yml", "config",
        "--format", "json",
    ).stdout)["services"]  # fmt: skip
    services = stack["services"]
    assert set(services) == set(MONITORING_LIMITS)
    for name, service in services.items():
        twin = overlay[name]
        assert service["image"] == twin["image"], name
        assert service["user"] == twin["user"], name
        assert service["cap_drop"] == ["ALL"], name
        assert service.get("cap_add") is None, name
        assert service["read_only"] is True, name
        assert "ports" not in service, name
        limits = {k: v for k, v in MONITORING_LIMITS[name].items() if k != "pids"}
        assert service["deploy"]["resources"]["limits"] == limits, name
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        assert {s["source"] for s in service.get("secrets", [])} == MONITORING_SECRETS[name], name
        assert service.get("command") == twin.get("command"), name
        assert service.get("entrypoint") == twin.get("entrypoint"), name
        policy = service["deploy"]["restart_policy"]["condition"]
        assert policy == ("on-failure" if name in MONITORING_ONE_SHOT else "any"), name
        if name in MONITORING_ONE_SHOT or "healthcheck" not in twin:
            assert service["healthcheck"] == {"disable": True}, name
        else:
            assert service["healthcheck"]["test"] == twin["healthcheck"]["test"], name
        # The files the overlay bind-mounts, here as Swarm configs at the same paths.
        mounted = {
            v["target"]: Path(v["source"]).resolve()
            for v in twin.get("volumes", []) if v["type"] == "bind"
        }  # fmt: skip
        configs = {
            c["target"]: Path(stack["configs"][c["source"]]["file"]).resolve()
            for c in service.get("configs", [])
        }
        if name == "prometheus":  # the overlay mounts the rules' folder, here its one file
            rules = mounted.pop("/etc/prometheus/rules")
            assert configs.pop("/etc/prometheus/rules/shipshape.yml") == rules / "shipshape.yml"
        assert configs == mounted, name
    # Swarm refuses names over 64 characters: room for a 20-character stack name.
    for config in stack["configs"].values():
        assert config["name"].startswith("shop_"), config
        assert len(config["name"].replace("shop", "s" * 20).replace("_0", "_4294967295")) <= 64
    assert stack["networks"]["backend"] == {"name": "shop_backend", "external": True, "ipam": {}}
    assert stack["networks"]["frontend"]["name"] == "shop_frontend"
    assert {name: s["external"] for name, s in stack["secrets"].items()} == dict.fromkeys(
        set().union(*MONITORING_SECRETS.values()), True
    )
    assert all(s["name"] == f"shop_{name}" for name, s in stack["secrets"].items())
    prometheus = services["prometheus"]["command"]
    assert "--storage.tsdb.retention.time=15d" in prometheus
    assert "--storage.tsdb.retention.size=5GB" in prometheus
