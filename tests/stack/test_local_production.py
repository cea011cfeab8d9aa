"""`make prod-local`: the production stack on this machine, from the Makefile alone, as the
README tells a newcomer to try it. With the failures a first production run met: a
placeholder secret (refused before anything starts), a dev stack beside it (`make down
ENV=dev` leaves prod alone), and a database volume initialised with another password
(explained, and repaired with `make db-password`)."""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.docker_utils import ROOT, TEST_IMAGE, docker
from tools.docker import free_port


class Local:
    def __init__(self, folder: Path) -> None:
        self.secrets = folder / "secrets"
        self.env_file = folder / "env.local"
        self.project = f"shipshape-local-{secrets.token_hex(3)}"
        self.https_port = free_port()
        self.variables = [
            f"LOCAL_ENV_FILE={self.env_file}", f"SECRETS_DIR={self.secrets}",
            f"PROJECT_NAME={self.project}", f"LOCAL_HTTPS_PORT={self.https_port}",
            f"LOCAL_HTTP_PORT={free_port()}",
        ]  # fmt: skip

    def make(self, *args: str, local: bool = True) -> subprocess.CompletedProcess[str]:
        # The image under this checkout's test name, not the `shipshape:local` of `make prod`
        # (compose takes these from the environment before the env file).
        # Nothing else from the test run's environment (ENVIRONMENT=test would win over the
        # env file's value in compose), as in a user's shell.
        keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env |= {"APP_IMAGE": TEST_IMAGE, "APP_TAG": "local"}
        return subprocess.run(
            ["make", "--no-print-directory", *args,
             *([*self.variables, f"ENV_FILE={self.env_file}"] if local else [])],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip

    def request(self, path: str, data: bytes | None = None, token: str = "") -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.secrets / "localhost.pem"))
        request = urllib.request.Request(
            f"https://localhost:{self.https_port}{path}", data=data,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())


def test_prod_local_serves_https_on_localhost_and_logs_the_first_admin_in(
    tmp_path: Path,
) -> None:
    local = Local(tmp_path)
    label = f"label=com.docker.compose.project={local.project}"
    try:
        # A placeholder secret: refused by the image's own check before the database exists.
        local.secrets.mkdir(mode=0o700)
        (local.secrets / "db_password").write_text("CHANGE_ME")
        refused = local.make("prod-local")
        assert refused.returncode != 0
        assert "DB_PASSWORD holds a placeholder value" in refused.stderr
        assert "nothing was started" in refused.stderr
        volumes = docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
        assert not [v for v in volumes if v.endswith("_postgres_data")], volumes
        (local.secrets / "db_password").unlink()  # make writes a random one

        up = local.make("prod-local")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"up: https://localhost:{local.https_port}/" in up.stdout
        assert local.request("/ready")[0] == 200  # verified against the printed certificate
        # The build's stamp, not hidden by the env file (it was "0.0.0+unknown").
        version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(), re.M)
        assert version is not None
        assert local.request("/")[1]["version"] == version.group(1)
        # The documented login: username and the password file, no password typed anywhere.
        password = (local.secrets / "admin_password").read_text()
        form = urllib.parse.urlencode({"username": "admin", "password": password}).encode()
        _, token = local.request("/api/v1/auth/token", form)
        assert local.request("/api/v1/users/me", token=token["access_token"])[1]["is_superuser"]

        # `make certbot` after an edit of the env file touches the certbot service only: it
        # recreated both app replicas at once (1,790 of 5,215 requests failed over 6.4 s).
        # The ACME server is a closed local port: no request leaves this machine.
        apps = docker("ps", "--quiet", "--filter", label, "--filter",
                      "label=com.docker.compose.service=app").stdout.split()  # fmt: skip
        started = docker("inspect", "--format", "{{.State.StartedAt}}", *apps).stdout
        text = local.env_file.read_text()
        text = re.sub(r"^LOG_LEVEL=.*$", "LOG_LEVEL=warning", text, flags=re.M)
        text = re.sub(r"^CERTBOT_SERVER=.*$", "CERTBOT_SERVER=https://127.0.0.1:9/dir", text,
                      flags=re.M)  # fmt: skip
        local.env_file.write_text(text)
        certbot = local.make("certbot", "ENV=local")
        assert certbot.returncode == 0, certbot.stdout + certbot.stderr
        assert docker("inspect", "--format", "{{.State.StartedAt}}", *apps).stdout == started
        assert local.request("/ready")[0] == 200

        # The dev stack beside it, then `make down` for dev only: prod keeps serving.
        dev_env = tmp_path / "env.dev"
        text = (ROOT / ".env.dev.example").read_text()
        for name in ("API_PORT", "DB_PUBLISH_PORT", "REDIS_PUBLISH_PORT"):
            text = re.sub(rf"^{name}=.*$", f"{name}={free_port()}", text, flags=re.M)
        dev_project = f"shipshape-dev-{secrets.token_hex(3)}"
        dev_env.write_text(re.sub(r"^COMPOSE_PROJECT_NAME=.*$", f"COMPOSE_PROJECT_NAME={dev_project}",
                                  text, flags=re.M))  # fmt: skip
        try:
            dev = local.make("dev", f"ENV_FILE={dev_env}", local=False)
            assert dev.returncode == 0, dev.stdout + dev.stderr
            down = local.make("down", "ENV=dev", f"ENV_FILE={dev_env}", local=False)
            assert down.returncode == 0, down.stdout + down.stderr
            assert f"--project-name {dev_project}" in down.stdout
            assert local.request("/ready")[0] == 200
        finally:
            local.make("destroy", "ENV=dev", f"ENV_FILE={dev_env}", "CONFIRM=1", local=False)

        # The volume keeps the password it was created with; new containers get a new one.
        assert local.make("down", "ENV=local").returncode == 0
        (local.secrets / "db_password").write_text(secrets.token_hex(32))
        stale = local.make("prod-local")
        assert stale.returncode != 0
        assert "this volume was initialised with another password" in stale.stderr
        assert "password authentication failed" in stale.stderr  # the app's own log line
        assert "make db-password ENV=local" in stale.stderr

        repaired = local.make("db-password", "ENV=local")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        again = local.make("prod-local")
        assert again.returncode == 0, again.stdout + again.stderr
        assert local.request("/ready")[0] == 200
    finally:
        destroyed = local.make("destroy", "ENV=local", "CONFIRM=1")
        assert docker("volume", "ls", "--quiet", "--filter", label).stdout.strip() == ""
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
