"""The monitoring configuration (monitoring/), checked by the tools of the images the stack
pins (docker-compose.monitoring.yml): `promtool check config`, every alert rule's unit tests
(`promtool test rules`, firing and not firing), and Alertmanager's file as the entrypoint
writes it, receivers included, accepted by `amtool check-config`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.docker_utils import ROOT, DockerError, docker

MONITORING = ROOT / "monitoring"
OVERLAY = yaml.safe_load((ROOT / "docker-compose.monitoring.yml").read_text())["services"]
PROMETHEUS = OVERLAY["prometheus"]["image"]
ALERTMANAGER = OVERLAY["alertmanager"]["image"]
ENTRYPOINT = ROOT / "docker" / "alertmanager" / "alertmanager-entrypoint.sh"
TEST_FILES = ("shipshape_test.yml", "shipshape_long_test.yml")


def _promtool(*args: str, mounts: tuple[str, ...] = ()) -> str:
    volumes = [f"--volume={MONITORING / 'prometheus'}:/etc/prometheus:ro"]
    volumes += [f"--volume={mount}" for mount in mounts]
    return docker(
        "run", "--rm", "--network=none", *volumes, "--workdir=/etc/prometheus/tests",
        "--entrypoint=/bin/promtool", PROMETHEUS, *args,
    ).stdout  # fmt: skip


def test_prometheus_accepts_its_configuration_and_rules(tmp_path: Path) -> None:
    token = tmp_path / "metrics_token"
    token.write_text("a-token\n")
    token.chmod(0o644)
    checked = _promtool(
        "check", "config", "/etc/prometheus/prometheus.yml",
        mounts=(f"{token}:/run/secrets/metrics_token:ro",),
    )  # fmt: skip
    assert "SUCCESS: 1 rule files found" in checked
    assert "shipshape.yml" in checked


def test_every_alert_rule_fires_on_its_fault_and_not_otherwise() -> None:
    """The unit tests (monitoring/prometheus/tests) cover every alert of the rules file, each
    firing and quiet at least once."""
    tested = _promtool("test", "rules", *TEST_FILES)
    assert tested.count("SUCCESS") == len(TEST_FILES)
    rules = yaml.safe_load((MONITORING / "prometheus" / "rules" / "shipshape.yml").read_text())
    alerts = {
        rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }
    cases = [
        case for name in TEST_FILES
        for case in yaml.safe_load((MONITORING / "prometheus" / "tests" / name).read_text())["tests"]
    ]  # fmt: skip
    firing = {
        check["alertname"] for case in cases for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }  # fmt: skip
    quiet = {
        check["alertname"] for case in cases for check in case["alert_rule_test"]
        if not check["exp_alerts"]
    }  # fmt: skip
    assert firing == alerts
    assert quiet == alerts


def _alertmanager_file(tmp_path: Path, url: str, **env: str) -> str:
    """The configuration the entrypoint writes, once amtool has accepted it."""
    hook = tmp_path / "alert_webhook_url"
    hook.write_text(url)
    hook.chmod(0o644)
    password = tmp_path / "smtp_password"
    password.write_text("smtp-secret\n")
    password.chmod(0o644)
    mounts = [
        f"{MONITORING / 'alertmanager' / 'alertmanager.yml'}:/etc/alertmanager/alertmanager.yml:ro",
        f"{ENTRYPOINT}:/opt/shipshape/alertmanager-entrypoint.sh:ro",
        f"{hook}:/run/secrets/alert_webhook_url:ro",
        f"{password}:/run/secrets/smtp_password:ro",
    ]
    variables = {"ALERT_WEBHOOK_URL_FILE": "/run/secrets/alert_webhook_url", **env}
    script = (
        # The entrypoint ends by running Alertmanager: here amtool checks what it wrote.
        'sed \'s|^exec /bin/alertmanager .*|/bin/amtool check-config "$RENDERED" '
        '>/dev/null \\&\\& cat "$RENDERED"|\' /opt/shipshape/alertmanager-entrypoint.sh > /tmp/e.sh'
        " && sh /tmp/e.sh"
    )
    return docker(
        "run", "--rm", "--network=none", "--user=65534:65534", "--read-only",
        "--tmpfs=/tmp", "--tmpfs=/run/alertmanager:uid=65534,gid=65534,mode=0700",
        *[f"--volume={mount}" for mount in mounts],
        *[f"--env={name}={value}" for name, value in variables.items()],
        "--entrypoint=/bin/sh", ALERTMANAGER, "-c", script,
    ).stdout  # fmt: skip


def test_alertmanager_sends_to_the_webhook_and_by_mail(tmp_path: Path) -> None:
    written = _alertmanager_file(
        tmp_path, 'https://hooks.example.com/alerts?token=a"b\\c\n',
        ALERT_EMAIL_TO="ops@example.com", SMTP_HOST="smtp.example.com", SMTP_PORT="465",
        SMTP_SECURITY="tls", SMTP_FROM="shipshape@example.com", SMTP_USERNAME="mailer",
        SMTP_PASSWORD_FILE="/run/secrets/smtp_password",
    )  # fmt: skip
    receivers = yaml.safe_load(written)["receivers"]
    assert receivers == [{
        "name": "operators",
        "webhook_configs": [
            {"url": 'https://hooks.example.com/alerts?token=a"b\\c', "send_resolved": True}
        ],
        "email_configs": [{
            "to": "ops@example.com", "from": "shipshape@example.com",
            "smarthost": "smtp.example.com:465", "require_tls": False, "send_resolved": True,
            "auth_username": "mailer", "auth_password": "smtp-secret",
        }],
    }]  # fmt: skip


def test_alertmanager_without_a_webhook_or_mail_keeps_alerts_on_its_page(tmp_path: Path) -> None:
    assert yaml.safe_load(_alertmanager_file(tmp_path, ""))["receivers"] == [{"name": "operators"}]


@pytest.mark.parametrize(
    ("url", "env", "message"),
    [
        ("ftp://example.com/", {}, "ALERT_WEBHOOK_URL_FILE must hold an http:// or https:// URL"),
        ("https://example.com/", {"ALERT_EMAIL_TO": "ops@example.com"},
         "ALERT_EMAIL_TO is set but SMTP_HOST is empty: alerts could not be mailed"),
        ("", {"ALERT_EMAIL_TO": "a@example.com", "SMTP_HOST": "smtp", "SMTP_SECURITY": "ssl"},
         "SMTP_SECURITY must be starttls, tls or none"),
    ],
)  # fmt: skip
def test_alertmanager_refuses_a_receiver_it_could_not_use(
    tmp_path: Path, url: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(DockerError) as refused:
        _alertmanager_file(tmp_path, url, **env)
    assert f"alertmanager: {message}" in str(refused.value)
    assert "failed (2)" in str(refused.value)
