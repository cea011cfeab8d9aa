"""The production Dockerfile's security-scan stage, built: bandit and the dependency audit run,
a finding fails the build, and with AUDIT_REQUIRED=true so does an audit that cannot run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.docker_utils import ROOT

INSECURE = '''"""Planted by the test: a shell command built from input (bandit B602)."""
import subprocess


def run(command: str) -> None:
    subprocess.call(command, shell=True)
'''


def _scan(context: Path, audit_required: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "docker", "build", "--file", str(ROOT / "docker/Dockerfile.prod"),
            "--target", "security-scan", "--progress", "plain", "--no-cache",
            "--build-arg", f"AUDIT_REQUIRED={str(audit_required).lower()}",
            str(context),
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _context(tmp_path: Path, requirements: str) -> Path:
    """What the stage copies: the app's code and a lock file."""
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "requirements.lock.txt").write_text(requirements)
    return tmp_path


def test_the_scan_of_the_project_passes_bandit_and_runs_the_audit() -> None:
    scan = _scan(ROOT)
    assert scan.returncode == 0, scan.stderr[-3000:]
    assert "No issues identified." in scan.stderr  # bandit's clean report
    assert "No known vulnerabilities found" in scan.stderr or "audit SKIPPED" in scan.stderr


def test_a_bandit_finding_fails_the_scan(tmp_path: Path) -> None:
    context = _context(tmp_path, "")
    (context / "app" / "insecure_example.py").write_text(INSECURE)
    scan = _scan(context)
    assert scan.returncode != 0
    assert "B602" in scan.stderr, scan.stderr[-3000:]


def test_a_package_the_audit_cannot_look_up_fails_only_when_the_audit_is_required(
    tmp_path: Path,
) -> None:
    context = _context(tmp_path, "shipshape-no-such-package-on-pypi==0.0.1\n")
    reported = _scan(context)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "could not be audited" in reported.stderr or "audit SKIPPED" in reported.stderr
    required = _scan(context, audit_required=True)
    assert required.returncode != 0, required.stderr[-3000:]
