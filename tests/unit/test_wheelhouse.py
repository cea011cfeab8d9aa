"""The offline wheelhouse (`make wheelhouse-build`) is downloaded in pip's hash-checking
mode: a wheel whose hash the lock file does not list is refused, as in the image's own
wheel stage."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import ModuleType

from tests.helpers import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "wheel_requirements", ROOT / "scripts" / "wheel_requirements.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_locked_pin_keeps_its_hashes_and_loses_its_markers() -> None:
    lock = (ROOT / "requirements.lock.txt").read_text()
    pins = _script().pins_with_hashes(lock)
    locked = re.findall(r"^([A-Za-z0-9_.-]+==[^\s;\\]+)", lock, re.M)
    assert list(pins) == locked
    assert all(pins.values())
    assert sum(map(len, pins.values())) == lock.count("--hash=sha256:")
    rendered = _script().render(pins)
    assert ";" not in rendered  # markers dropped: the image's Python decides
    assert rendered.count("--hash=") == lock.count("--hash=")
    assert "pip download --quiet --no-deps --require-hashes" in (ROOT / "Makefile").read_text()


def _pip() -> str:
    for candidate in (ROOT / ".tools" / "bin" / "pip", shutil.which("pip3"), shutil.which("pip")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    skip_or_fail_in_ci("no pip to download with (make creates .tools/bin/pip)")
    raise AssertionError("unreachable")


def _wheel(folder: Path) -> Path:
    wheel = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tinypkg/__init__.py", "")
        archive.writestr(
            "tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n"
        )
        archive.writestr("tinypkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        archive.writestr("tinypkg-1.0.dist-info/RECORD", "")
    return wheel


def _download(pip: str, index: Path, lock: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    requirements = tmp_path / "wheels.requirements.txt"
    script = _script()
    requirements.write_text(script.render(script.pins_with_hashes(lock)))
    return subprocess.run(
        [pip, "download", "--no-index", "--find-links", str(index), "--no-deps",
         "--require-hashes", "--dest", str(tmp_path / "out"), "-r", str(requirements)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_a_wheel_whose_hash_differs_from_the_lock_is_refused(tmp_path: Path) -> None:
    pip = _pip()
    index = tmp_path / "index"
    index.mkdir()
    digest = hashlib.sha256(_wheel(index).read_bytes()).hexdigest()
    good = f"tinypkg==1.0 ; python_version >= '3' \\\n    --hash=sha256:{digest}\n"
    assert _download(pip, index, good, tmp_path).returncode == 0
    tampered = good.replace(digest, hashlib.sha256(b"another wheel").hexdigest())
    refused = _download(pip, index, tampered, tmp_path / "again")
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stderr
