"""A production stack on this machine: its env file and the environment compose runs in.

Shared by the benchmarks (`up --wait` time) and the stack tests, which bring up the same
production compose files on free 127.0.0.1 ports.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from tools.docker import ROOT

SECRET_FILES = (
    "secret_key", "jwt_secret_key", "db_password", "redis_password", "admin_password",
    "webhook_secret", "metrics_token", "monitoring_db_password",
)  # fmt: skip
# Secrets that are no random value: written empty unless given (an empty webhook URL sends
# alerts nowhere).
OPTIONAL_SECRET_FILES = ("alert_webhook_url",)

# The secrets each service of the production compose stack mounts, and nothing more.
SERVICE_SECRETS: dict[str, set[str]] = {
    "app": set(SECRET_FILES) - {"monitoring_db_password"},
    "worker": {"secret_key", "jwt_secret_key", "db_password", "redis_password", "webhook_secret"},
    "db": {"db_password"},
    "redis": {"redis_password"},
    "backup": {"db_password"},
    "nginx": set(),
    "certbot": set(),
}
# The same for the services of docker-compose.monitoring.yml.
MONITORING_SECRETS: dict[str, set[str]] = {
    "prometheus": {"metrics_token"},
    "alertmanager": {"alert_webhook_url"},
    "postgres-exporter": {"monitoring_db_password"},
    "redis-exporter": set(),
    "redis-exporter-config": {"redis_password"},
    "nginx-exporter": set(),
    "monitoring-role": {"db_password", "monitoring_db_password"},
}


def prod_env_file(path: Path, overrides: dict[str, str]) -> dict[str, str]:
    """.env.prod.example with `overrides` applied (each must be a variable of the example),
    written to `path`, and a fresh random file for every secret in a `secrets` folder beside
    it (an override of a secret goes into its file). Returns every variable of the file and
    every secret's value."""
    text = (ROOT / ".env.prod.example").read_text()
    folder = path.parent / f"{path.name}.secrets"
    folder.mkdir(mode=0o700, exist_ok=True)
    values = {name.upper(): secrets.token_urlsafe(32) for name in SECRET_FILES}
    values |= {name.upper(): "" for name in OPTIONAL_SECRET_FILES}
    for key, value in {**overrides, "SECRETS_DIR": str(folder)}.items():
        if key in values:
            values[key] = value
            continue
        text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        if count != 1:
            raise ValueError(f"{key} is not a variable of .env.prod.example")
    for key, value in values.items():
        secret = folder / key.lower()
        secret.write_text(value)
        secret.chmod(0o644)  # read by the containers' own users
    path.write_text(text)
    return {**dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M)), **values}


def compose_environment(env_file: Path) -> dict[str, str]:
    """This process's environment minus every variable the env files document: the
    shell's values would win over --env-file. ENV_FILE points the services' env_file at it."""
    documented: set[str] = set()
    for example in ROOT.glob(".env.*.example"):
        documented |= set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example.read_text(), re.M))
    env = {k: v for k, v in os.environ.items() if k not in documented}
    env["ENV_FILE"] = str(env_file)
    return env
