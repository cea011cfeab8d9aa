"""What this container may use, read from its cgroup: no import of the app's own modules, so
that the settings and the services can both ask."""

from __future__ import annotations

from pathlib import Path


def memory_limit_bytes() -> int | None:
    """This container's memory limit (cgroup v2 or v1), or None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 reports "no limit" as a huge number
            return int(text)
        return None
    return None
