"""Config tier: render the compose overlays with the example env files (CLI only)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools.compose_env import SERVICE_SECRETS

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
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = compose(overlay, ROOT / EXAMPLE[env_name], *flags, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


PROFILE_SERVICES = {"tools": {"pgadmin", "mailcatcher"}, "certbot": {"certbot"}}


@pytest.mark.parametrize(
    ("overlay", "env_name", "profile"),
    [("dev", "dev", "tools"), ("prod", "prod", "certbot"), ("prod", "staging", "certbot")],
)
def test_every_overlay_renders_with_its_example(overlay: str, env_name: str, profile: str) -> None:
    """Each overlay renders with its example env file; its profile's services are there only
    when the profile is asked for."""
    services = set(rendered(overlay, env_name)["services"])
    assert services >= set(LONG_RUNNING[overlay])
    assert services & PROFILE_SERVICES[profile] == set()
    with_profile = set(rendered(overlay, env_name, profile)["services"])
    assert with_profile - services == PROFILE_SERVICES[profile]


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


def _published(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: svc.get("ports", []) for name, svc in config["services"].items() if svc.get("ports")
    }


def test_prod_publishes_only_nginx_http_and_https() -> None:
    config = rendered("prod", "prod", "certbot")
    published = _published(config)
    assert set(published) == {"nginx"}
    assert sorted(p["target"] for p in published["nginx"]) == [80, 443]
    for name in ("db", "redis"):
        assert config["services"][name]["networks"].keys() == {"backend"}
    assert config["networks"]["backend"]["internal"] is True
    app_env = config["services"]["app"]["environment"]
    assert app_env.get("DEBUG", "false") == "false"
    assert app_env["ENVIRONMENT"] == "production"


def test_dev_binds_to_loopback_and_needs_no_tls_material() -> None:
    config = rendered("dev", "dev", "tools")
    for name, ports in _published(config).items():
        assert all(p["host_ip"] == "127.0.0.1" for p in ports), name
    dumped = json.dumps(config)
    assert "letsencrypt" not in dumped
    assert "nginx" not in config["services"]
    assert "certbot" not in config["services"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_long_running_services_are_healthchecked_limited_rotated_hardened(overlay: str) -> None:
    config = rendered(overlay, overlay)
    for name in LONG_RUNNING[overlay]:
        svc = config["services"][name]
        assert svc["healthcheck"]["test"], name
        assert svc["restart"] == "unless-stopped", name
        limits = svc["deploy"]["resources"]["limits"]
        assert all(limits.get(key) for key in ("cpus", "memory", "pids")), name
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
    assert config["services"]["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert config["services"]["app"]["depends_on"]["redis"]["condition"] == "service_healthy"


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
    graceful = int(
        re.search(r"^GRACEFUL_TIMEOUT=(\d+)", (ROOT / ".env.prod.example").read_text(), re.M)[1]
    )
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
    used = set(
        re.findall(
            r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.logging.yml").read_text()
        )
    )
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", env_file.read_text(), re.M))
    assert used <= documented


def test_swarm_stack_file_updates_safely() -> None:
    env = {
        **os.environ,
        "APP_TAG": "1.0.0",
        "DOMAIN": "example.test",
        "BASE_URL": "https://example.test",
    }
    result = subprocess.run(
        ["docker", "compose", "-f", "docker-stack.yml", "config", "--format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    app = services["app"]["deploy"]
    assert app["replicas"] == 2
    assert app["update_config"]["order"] == "start-first"
    assert app["update_config"]["failure_action"] == "rollback"
    assert app["update_config"]["parallelism"] == 1
    assert app["rollback_config"]["order"] == "start-first"
    for name, service in services.items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        if name == "tls-bootstrap":  # a job that runs once: done when it exited 0
            assert service["healthcheck"] == {"disable": True}
            assert service["deploy"]["restart_policy"]["condition"] == "on-failure"
            continue
        assert service["healthcheck"]["test"], name
    assert {p["mode"] for p in services["nginx"]["ports"]} == {"host"}
    assert all(secret.get("external") for secret in config["secrets"].values())
    # No depends_on in Swarm: the worker waits for its broker with wait-for-it.
    worker = services["worker"]["command"]
    assert worker[:2] == ["/app/scripts/wait-for-it.sh", "redis:6379"]
    assert worker[worker.index("--") + 1 :] == ["/app/scripts/docker-entrypoint.sh", "worker"]
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
        binds = [m for m in services[name]["volumes"] if m["type"] == "bind"]
        assert [(Path(m["source"]), m["target"]) for m in binds] == [(ROOT, "/app")], name
    # The virtual environment is outside the mounted tree, so the mount cannot hide it.
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in (ROOT / "docker" / "Dockerfile.dev").read_text()
    assert {"pgadmin", "mailcatcher"} <= set(services)
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
