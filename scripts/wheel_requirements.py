"""The requirements of the offline wheelhouse, from the lock file.

    python scripts/wheel_requirements.py requirements.lock.txt > wheels.requirements.txt

The requirements `make wheelhouse-build` downloads the image's wheels with: every pin of the
lock file with its hashes (pip then runs in hash-checking mode and refuses a wheel whose
hash the lock does not list), and without environment markers: the image's interpreter, not
the host's, decides what applies (async-timeout is needed below Python 3.11.3 only), so
every pin gets its wheel.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9_.-]+==[^\s;\\]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def pins_with_hashes(lock: str) -> dict[str, list[str]]:
    """Each `name==version` of the lock file and its hashes, in the file's order."""
    pins: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lock.splitlines():
        if match := _PIN.match(line):
            current = pins.setdefault(match.group(1), [])
        elif line.startswith((" ", "\t")) and current is not None:
            current.extend(_HASH.findall(line))
        else:
            current = None
    return pins


def render(pins: dict[str, list[str]]) -> str:
    missing = [pin for pin, hashes in pins.items() if not hashes]
    if missing:
        raise SystemExit(f"pins without a hash in the lock file: {', '.join(missing)}")
    lines = []
    for pin, hashes in pins.items():
        lines.append(pin + "".join(f" \\\n    --hash={digest}" for digest in hashes))
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.stdout.write(render(pins_with_hashes(Path(sys.argv[1]).read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
