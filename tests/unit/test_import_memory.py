"""The largest allowed import, in the API process (no broker): bounded memory, and the
service keeps answering while it runs.

The attack that found it: a 2 MB CSV of a million one-letter rows ran 201 s, took the
process to 4 GB and left /live unanswered for up to 84 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.docker_utils import wait_until
from tests.server import largest_import, memory, multipart, serve

MIB = 2**20


def test_the_largest_import_keeps_memory_bounded_and_the_service_answering(
    tmp_path: Path,
) -> None:
    content = largest_import()
    with serve(tmp_path) as server:
        admin = server.login("admin", server.admin_password)
        for _ in range(20):
            server.request("GET", "/live")
        idle = memory(server.process.pid)
        body, content_type = multipart("file", "items.csv", content)
        started = time.monotonic()
        status, job = server.request(
            "POST", "/api/v1/items/import", body, {**admin, "Content-Type": content_type}
        )
        assert status == 202, job
        slowest, progress = 0.0, []

        def finished() -> dict[str, Any] | None:
            nonlocal slowest
            before = time.monotonic()
            assert server.request("GET", "/live")[0] == 200
            slowest = max(slowest, time.monotonic() - before)
            current = server.request("GET", f"/api/v1/jobs/{job['id']}", None, admin)[1]
            progress.append(current["progress"]["done"])
            return current if current["state"] in ("succeeded", "failed") else None

        done = wait_until(finished, 120, "the import to finish", interval=0.1)
        took = time.monotonic() - started
        peak = memory(server.process.pid, "VmHWM")
    print(
        f"\n{len(content) / 1e6:.1f} MB, {done['progress']['total']} rows: {took:.1f} s, "
        f"peak RSS {peak / MIB:.0f} MiB ({(peak - idle) / MIB:.0f} MiB over idle), "
        f"slowest /live {slowest * 1000:.0f} ms"
    )
    assert done["state"] == "succeeded", done
    assert done["progress"] == {"done": 100_000, "total": 100_000}
    assert len(set(progress)) >= 3  # the progress moved while it ran
    assert slowest < 1.0
    assert peak - idle < 150 * MIB
