"""docker/certbot/certbot.sh: the certbot service's loop, with a fake certbot that records
each call (the stack tier runs the real one against a local ACME server)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import tools_folder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker/certbot/certbot.sh"
# Fake certbot and sleep record their arguments; the second sleep ends the loop (it signals
# the script, its parent), so a run is: the request when no certificate exists, a sleep, one
# renewal, and the next sleep.
CERTBOT = 'echo "$*" >> "$CALLS"'
SLEEP = 'echo "sleep $*" >> "$CALLS"\n[ "$(grep -c ^sleep "$CALLS")" -lt 2 ] || kill -TERM "$PPID"'
ACCOUNT = "--non-interactive --agree-tos --no-eff-email --email ops@example.test"
WEBROOT = "--webroot --webroot-path /var/www/certbot"


def run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = tmp_path / "calls"
    calls.touch()
    environment = {
        "PATH": f"{tools_folder(tmp_path / 'bin', certbot=CERTBOT, sleep=SLEEP)}:/usr/bin:/bin",
        "CALLS": str(calls),
        "DOMAIN": "example.test",
        "SSL_EMAIL": "ops@example.test",
        **env,
    }
    result = subprocess.run(
        ["sh", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    return result, calls.read_text().splitlines()


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ({}, ""),
        ({"CERTBOT_STAGING": "true"}, " --staging"),
        ({"CERTBOT_SERVER": "https://acme.test/dir"}, " --server https://acme.test/dir"),
        (
            {"CERTBOT_SERVER": "https://acme.test/dir", "CERTBOT_STAGING": "true"},
            " --server https://acme.test/dir",
        ),
    ],
)
def test_it_requests_the_certificate_then_renews_it_with_a_random_delay(
    tmp_path: Path, env: dict[str, str], server: str
) -> None:
    """The request for DOMAIN by webroot, then `certbot renew` every interval: without a
    flag against it, certbot waits a random while before a due renewal, as Let's Encrypt
    asks of every client."""
    result, calls = run(tmp_path, **env)
    renew_server = server if "--server" in server else ""
    assert calls == [
        f"certonly {ACCOUNT} {WEBROOT}{server} --domain example.test --keep-until-expiring",
        "sleep 43200",  # twice a day
        f"renew --non-interactive {WEBROOT}{renew_server}",
        "sleep 43200",
    ], result.stdout + result.stderr
    assert result.returncode == -15  # ended by the fake's signal, in its loop


def test_without_the_delay_a_due_certificate_is_renewed_at_once(tmp_path: Path) -> None:
    result, calls = run(tmp_path, CERTBOT_RENEW_DELAY="false", CERTBOT_SERVER="https://a.test/d",
                        CERTBOT_RENEW_INTERVAL="5")  # fmt: skip
    assert calls[1:] == [
        "sleep 5",
        f"renew --non-interactive {WEBROOT} --no-random-sleep-on-renew --server https://a.test/d",
        "sleep 5",
    ], result.stdout + result.stderr


@pytest.mark.parametrize("value", ["no", "FALSE", "0", "yes please"])
def test_a_delay_that_is_not_true_or_false_is_refused_before_any_request(
    tmp_path: Path, value: str
) -> None:
    result, calls = run(tmp_path, CERTBOT_RENEW_DELAY=value)
    assert result.returncode == 2
    assert result.stderr == f'CERTBOT_RENEW_DELAY must be true or false, not "{value}"\n'
    assert calls == []
