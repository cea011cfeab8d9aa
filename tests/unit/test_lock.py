"""requirements.lock.txt (what the images install) is the export of uv.lock."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]


def _pins(text: str) -> list[str]:
    return sorted(
        line.strip() for line in text.splitlines() if "==" in line and not line.startswith("#")
    )


def test_requirements_lock_matches_uv_lock() -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        skip_or_fail_in_ci("uv is not available to export the lock file")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-header"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "requirements.lock.txt").read_text(encoding="utf-8")
    assert _pins(committed) == _pins(exported), (
        "requirements.lock.txt is stale: run `make lock-deps`"
    )
    assert _pins(committed), "no pinned packages"


def test_every_pin_carries_its_hashes() -> None:
    """The image's builder downloads with --require-hashes (CIS Docker 4.11)."""
    text = (ROOT / "requirements.lock.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.split("\n") if "==" in block and not block.startswith("#")]
    assert blocks
    for pin in blocks:
        following = text.split(pin, 1)[1].lstrip("\n").split("\n", 1)[0]
        assert pin.endswith(" \\"), pin
        assert following.strip().startswith("--hash=sha256:"), pin
