"""Load generation: wrk when it is installed, else a small Python generator (slower, so its
absolute numbers are lower; the ratios between servers measured with it stay comparable).

Every run is bounded in time and in requests, and only ever targets 127.0.0.1.
"""

from __future__ import annotations

import http.client
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# Each request takes the next path of the list (each wrk thread runs its own copy): load
# spread over pages that no cache holds.
_PATHS_SCRIPT = """
paths = {%s}
n = 0
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n %% #paths) + 1])
end
"""


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(
    port: int, paths: list[str], seconds: float, connections: int, headers: dict[str, str]
) -> LoadResult:
    command = [
        "wrk",
        "-t2",  # two generator threads: one could not keep a fast server busy
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if len(paths) > 1:
            script.write(_PATHS_SCRIPT % ", ".join(_lua(p) for p in paths))
            script.flush()
            command += ["-s", script.name]
        command.append(f"http://127.0.0.1:{port}{paths[0]}")
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\n\s+50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\n\s+99%\s+(\S+)", out)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match[1])
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in match.groups())
    return LoadResult(rps, p50, p99, total, errors, "wrk")


def run_python(
    port: int, paths: list[str], seconds: float, connections: int, headers: dict[str, str]
) -> LoadResult:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    limit = 200_000

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        mine: list[float] = []
        while time.monotonic() < deadline and len(mine) < limit // connections:
            started = time.perf_counter()
            try:
                conn.request("GET", paths[len(mine) % len(paths)], headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status < 400
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            mine.append((time.perf_counter() - started) * 1000)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    return LoadResult(
        len(latencies) / elapsed,
        statistics.median(latencies or [0]),
        p99,
        len(latencies),
        errors[0],
        "python",
    )


def run_load(
    port: int,
    path: str | list[str],
    seconds: float,
    connections: int = 32,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Load on 127.0.0.1:`port` for `seconds`: one path, or each request the next of a list."""
    paths = [path] if isinstance(path, str) else path
    if shutil.which("wrk"):
        return run_wrk(port, paths, seconds, connections, headers or {})
    return run_python(port, paths, seconds, min(connections, 8), headers or {})
