"""Strip debug symbols from the native extensions inside a wheelhouse, in place.

    python scripts/strip_wheels.py WHEEL_DIR

Several manylinux wheels ship their extensions with full debug info (uvloop's loop
module is 13 MB, 1.6 MB stripped). The wheels are rewritten with `strip
--strip-unneeded` applied and their RECORD updated, so pip installs them as usual and
the runtime image stays small. Without a `strip` binary the wheels are left as they
are, and the script says so. Pure-Python wheels are never touched.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def strip_wheel(wheel: Path, strip: str) -> int:
    """Rewrite `wheel` with stripped extensions; returns the installed bytes saved."""
    with zipfile.ZipFile(wheel) as source:
        names = source.namelist()
        if not any(n.endswith(".so") or ".so." in n for n in names):
            return 0
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        with tempfile.TemporaryDirectory() as tmp:
            source.extractall(tmp)
            contents: dict[str, bytes] = {}
            saved = 0
            for name in names:
                if name.endswith("/"):
                    continue  # a directory entry
                path = Path(tmp, name)
                if name.endswith(".so") or ".so." in name:
                    size = path.stat().st_size
                    subprocess.run([strip, "--strip-unneeded", str(path)], check=True)  # noqa: S603
                    saved += size - path.stat().st_size
                contents[name] = path.read_bytes()
            infos = {info.filename: info for info in source.infolist()}
    records = [_record_line(n, data) for n, data in contents.items() if n != record_name]
    contents[record_name] = ("\n".join([*records, f"{record_name},,"]) + "\n").encode()
    replacement = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(replacement, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in contents.items():
            target.writestr(infos[name], data, compress_type=zipfile.ZIP_DEFLATED)
    replacement.replace(wheel)
    return saved


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[0])
    strip = shutil.which("strip")
    if strip is None:
        print("strip_wheels: no `strip` (binutils): wheels left unstripped", file=sys.stderr)
        return 0
    saved = 0
    for wheel in sorted(directory.glob("*.whl")):
        saved += strip_wheel(wheel, strip)
    mb = saved / 1e6
    print(f"strip_wheels: {directory}: {mb:.1f} MB of debug symbols removed (installed size)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
