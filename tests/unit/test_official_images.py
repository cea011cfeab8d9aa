"""What runs inside the official service images uses only what those images have.

The tests of the running stack use local stand-ins of the official images where no registry
is reachable (Debian-based, with more tools); these checks hold the files to the official
images themselves. docs/development.md lists every difference a test depends on.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
NGINX_HOOK = ROOT / "docker" / "nginx" / "40-shipshape-certificates.sh"
NGINX_SITE = ROOT / "docker" / "nginx" / "templates" / "default.conf.template"
# Commands the official nginx:1.27-alpine image does not have (BusyBox, nginx, curl and
# envsubst are all it brings): openssl is only there as libraries.
NOT_IN_NGINX_ALPINE = ("openssl", "bash", "apk", "python3", "python", "gosu", "su-exec")


def _code(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def test_the_nginx_start_hook_runs_nothing_the_official_image_lacks() -> None:
    code = _code(NGINX_HOOK)
    for command in NOT_IN_NGINX_ALPINE:
        assert not re.search(rf"(^|[\s;|&(`$]){re.escape(command)}(\s|$)", code, re.M), command


def test_the_bootstrap_certificate_is_made_where_openssl_is() -> None:
    prod = yaml.safe_load((ROOT / "docker-compose.prod.yml").read_text())["services"]
    stack = yaml.safe_load((ROOT / "docker-stack.yml").read_text())["services"]
    for services in (prod, stack):
        bootstrap = services["tls-bootstrap"]
        # The certbot image: Alpine with the openssl command (certbot's own Dockerfile).
        assert bootstrap["image"] == services.get("certbot", prod["certbot"])["image"]
        assert bootstrap["entrypoint"][-1] == "/opt/shipshape/bootstrap-certificate.sh"
        assert any(v.startswith("letsencrypt:/etc/letsencrypt") for v in bootstrap["volumes"])
        assert any(
            v.startswith("letsencrypt:/etc/letsencrypt") for v in services["nginx"]["volumes"]
        )
    assert prod["nginx"]["depends_on"]["tls-bootstrap"] == {
        "condition": "service_completed_successfully"
    }
    assert stack["tls-bootstrap"]["deploy"]["restart_policy"]["condition"] == "on-failure"
    # Swarm volumes are local to a node: the two run where the volume is.
    assert stack["tls-bootstrap"]["deploy"]["placement"] == stack["nginx"]["deploy"]["placement"]


def test_the_https_listener_is_written_for_nginx_1_22_and_1_27() -> None:
    # `http2 on;` exists from nginx 1.25.1 only; `listen ... ssl http2` works on both (1.25+
    # merely warns that it is deprecated).
    site = _code(NGINX_SITE)
    assert re.search(r"listen 443 ssl http2", site)
    assert not re.search(r"^\s*http2\s+on;", site, re.M)


def test_backups_drop_root_with_the_tool_each_official_postgres_image_has() -> None:
    code = _code(ROOT / "scripts" / "backup.sh")
    # Debian's official image has gosu, the Alpine one su-exec; setpriv (util-linux) is
    # the last resort.
    assert re.search(r"for tool in gosu su-exec; do", code)
    assert code.index("for tool in gosu su-exec") < code.index("exec setpriv")


def test_the_swarm_stack_runs_the_images_compose_runs() -> None:
    """Dependabot updates the compose files only: a Swarm stack left on the old images would
    drift from what the compose tiers test."""
    compose: dict[str, str] = {}
    for name in ("docker-compose.yml", "docker-compose.prod.yml", "docker-compose.monitoring.yml"):
        for service, spec in yaml.safe_load((ROOT / name).read_text())["services"].items():
            if "image" in spec:
                compose[service] = spec["image"]
    stack = {
        service: spec
        for name in ("docker-stack.yml", "docker-stack.monitoring.yml")
        for service, spec in yaml.safe_load((ROOT / name).read_text())["services"].items()
    }
    differing = {
        service: (spec["image"], compose[service])
        for service, spec in stack.items()
        if service in compose
        and spec.get("image") != compose[service]
        and not spec["image"].startswith("${APP_IMAGE")
    }
    assert differing == {}
    assert {"db", "redis", "nginx", "tls-bootstrap", "prometheus", "alertmanager",
            "postgres-exporter"} <= set(stack) & set(compose)  # fmt: skip


def test_dependabot_never_proposes_a_postgres_major() -> None:
    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    [compose] = [u for u in updates if u["package-ecosystem"] == "docker-compose"]
    assert {"dependency-name": "postgres", "update-types": ["version-update:semver-major"]} in (
        compose["ignore"]
    )
