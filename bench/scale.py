"""Data-scale benchmark: the same requests against 1,000, 100,000 and 1,000,000 items on
Postgres, and what each costs at the larger sizes as a ratio of its cost at 1,000.

    python -m bench.scale              # `make bench-scale`: 1,000, 100,000 and 1,000,000 rows
    python -m bench.scale --huge       # and 10,000,000 (about 15 minutes more)
    python -m bench.scale --smoke      # 1,000 and 100,000 (CI)

For each size a fresh database is seeded with `generate_series` (one user's items, in groups of
1,000 that share a created_at as imports do, 1,000 of another user's, as many jobs), then the
service (`python -m app serve`, production defaults, no Redis: every read reaches the
database) answers over HTTP on 127.0.0.1: the first items page, the page 1,000 pages deep
(through its cursor), a title search that finds one title at every size and one whose
matches grow with the table ("item 999": 1, 111, 1,111), the first jobs page, /health and /metrics, each the median
of ROUNDS sequential requests. Then an import of IMPORT_ROWS rows and an export of every item,
in rows per second, and the server's peak RSS. Prints a table and writes bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.services.pagination import CursorCodec, Direction, Position
from tools.docker import ROOT, docker, free_port, terminate, wait_until

RESULTS = ROOT / "bench" / "results"
PAGE = 50
DEEP_PAGES = 1_000
ROUNDS = 60
IMPORT_ROWS = 100_000
GOAL_RATIO = 1.5
PASSWORD = "bench-scale-password"  # noqa: S105 - a throwaway database on 127.0.0.1
REQUESTS = ("first items page", "items page 1,000 pages deep", "title search, one match",
            "title search, matches grow with the table", "first jobs page", "/health",
            "/metrics")  # fmt: skip


@dataclass
class Level:
    rows: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    import_rows_per_s: float = 0.0
    export_rows_per_s: float = 0.0
    exported: int = 0
    peak_rss_mib: float = 0.0
    seed_s: float = 0.0


# (statement, which of alice / bob / the size it takes as $1, $2)
SEED = [
    ("""INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
        SELECT gen_random_uuid(), 'item ' || n, 'a description of item ' || n, $1,
               now() - interval '1 hour' - (n / 1000) * interval '1 second', now()
        FROM generate_series(1, $2::int) AS n""", ("alice", "rows")),
    ("""INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
        SELECT gen_random_uuid(), 'other ' || n, NULL, $1, now() - n * interval '1 ms', now()
        FROM generate_series(1, 1000) AS n""", ("bob",)),
    # The one title a search for "needle" finds, at every size, half-way down the listing.
    ("""INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
        VALUES (gen_random_uuid(), 'the needle', NULL, $1,
                now() - interval '1 hour' - ($2::int / 2000) * interval '1 second', now())""",
     ("alice", "rows")),
    ("""INSERT INTO jobs (id, kind, owner_id, state, done, total, deliveries, webhook_state,
                          webhook_attempts, created_at, updated_at)
        SELECT gen_random_uuid(), 'import', $1,
               CASE WHEN n <= 10 THEN 'queued' WHEN n <= 15 THEN 'running'
                    ELSE 'succeeded' END,
               0, 0, 1, 'none', 0, now() - n * interval '1 second', now()
        FROM generate_series(1, $2::int) AS n""", ("alice", "rows")),
    ("VACUUM ANALYZE", ()),
]  # fmt: skip


@contextlib.contextmanager
def postgres() -> Iterator[int]:
    """Postgres 15 sized as the stacks size it (1 GiB), its data in a volume of its own (on a
    tmpfs the data would count against that GiB); its port."""
    script = ROOT / "docker" / "postgres" / "postgres-entrypoint.sh"
    cid = docker(
        "run", "--detach", "--label", "shipshape-bench=1", "--memory", "1g",
        "--shm-size", "256m", "--volume", "/var/lib/postgresql/data",
        "--publish", "127.0.0.1::5432", "--env", f"POSTGRES_PASSWORD={PASSWORD}",
        "--volume", f"{script}:/opt/shipshape/postgres-entrypoint.sh:ro",
        "--entrypoint", "/bin/sh", "postgres:15-alpine", "/opt/shipshape/postgres-entrypoint.sh",
    ).stdout.strip()  # fmt: skip
    try:
        port = int(docker("port", cid, "5432/tcp").stdout.strip().rsplit(":", 1)[1])
        wait_until(lambda: asyncio.run(_admin(port, "SELECT 1")) or True, 60, "Postgres")
        yield port
    finally:
        docker("rm", "--force", "--volumes", cid, check=False)


async def _admin(port: int, sql: str, *args: Any, database: str = "postgres") -> Any:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", password=PASSWORD, database=database
    )
    try:
        return await connection.execute(sql, *args)
    finally:
        await connection.close()


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body = self.call(method, path, **kwargs)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def login(self, username: str) -> dict[str, str]:
        form = f"username={username}&password={PASSWORD}".encode()
        token = self.json("POST", "/api/v1/auth/token", body=form,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        return {"Authorization": f"Bearer {token['access_token']}"}


def median_ms(client: Client, path: str, headers: dict[str, str]) -> float:
    for _ in range(5):  # warm the connection pool and the plans
        client.call("GET", path, headers=headers)
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        status, body = client.call("GET", path, headers=headers)
        timings.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
    return statistics.median(timings) * 1000


@contextlib.contextmanager
def service(port: int, database: str, tmp: Path, secret: str) -> Iterator[tuple[Client, int]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "DATABASE"))},
        "ENVIRONMENT": "test",
        "DATABASE_URL": f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{port}/{database}",
        "SECRET_KEY": secret,
        "METRICS_TOKEN": secret,
        "ADMIN_PASSWORD": PASSWORD,
        "UPLOADS_DIR": str(tmp / "uploads"),
        "STORAGE_DIR": str(tmp / "storage"),
        "IMPORT_MAX_BYTES": str(50_000_000),
    }
    for command in ("migrate", "create-superuser"):
        subprocess.run([sys.executable, "-m", "app", command], env=env, cwd=ROOT, check=True,
                       capture_output=True, timeout=300)  # fmt: skip
    http = free_port()
    log = (tmp / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(http)],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = Client(f"http://127.0.0.1:{http}")
    try:
        wait_until(lambda: client.call("GET", "/ready")[0] == 200, 60, "the service")
        yield client, process.pid
    finally:
        terminate(process, timeout=15)
        log.close()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_job(client: Client, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.json("GET", f"/api/v1/jobs/{job_id}", headers=headers)
        return job if job["state"] in ("succeeded", "failed") else None

    job = wait_until(finished, 1800, f"job {job_id}", interval=0.05)
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id}: {job['error']}")
    return job


def multipart(content: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(8)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="i.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n").encode()  # fmt: skip
    return head + content + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def measure(port: int, rows: int, say: Any) -> Level:
    level = Level(rows)
    database = f"scale_{rows}"
    asyncio.run(_admin(port, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    asyncio.run(_admin(port, f"CREATE DATABASE {database}"))
    secret = secrets.token_urlsafe(32)
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        service(port, database, Path(tmp_name), secret) as (client, pid),
    ):
        admin = client.login("admin")
        ids = {}
        for name in ("alice", "bob"):
            body = json.dumps({"username": name, "email": f"{name}@example.com",
                               "password": PASSWORD}).encode()  # fmt: skip
            user = client.json("POST", "/api/v1/users", body=body,
                               headers={**admin, "Content-Type": "application/json"})  # fmt: skip
            ids[name] = user["id"]
        started = time.monotonic()
        values = {"alice": uuid.UUID(ids["alice"]), "bob": uuid.UUID(ids["bob"]), "rows": rows}
        for sql, names in SEED:
            asyncio.run(_admin(port, sql, *[values[n] for n in names], database=database))
        level.seed_s = time.monotonic() - started
        say(f"  {rows:,} rows seeded in {level.seed_s:.0f} s")
        alice = client.login("alice")
        deep = min(PAGE * DEEP_PAGES, rows - PAGE)
        row = asyncio.run(_row_at(port, database, ids["alice"], deep))
        cursor = CursorCodec(secret, "items", ids["alice"]).encode(Direction.NEXT, row)
        operator = {"Authorization": f"Bearer {secret}"}
        paths = {
            "first items page": (f"/api/v1/items?limit={PAGE}", alice),
            "items page 1,000 pages deep": (f"/api/v1/items?limit={PAGE}&cursor={cursor}", alice),
            "title search, one match": (f"/api/v1/items?limit={PAGE}&q=needle", alice),
            "title search, matches grow with the table": (
                f"/api/v1/items?limit={PAGE}&q=item%20999",
                alice,
            ),
            "first jobs page": (f"/api/v1/jobs?limit={PAGE}", alice),
            "/health": ("/health", operator),
            "/metrics": ("/metrics", operator),
        }
        for name, (path, headers) in paths.items():
            level.latency_ms[name] = median_ms(client, path, headers)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["title", "description"])
        writer.writerows([f"imported {n}", f"an imported row {n}"] for n in range(IMPORT_ROWS))
        body, content_type = multipart(out.getvalue().encode())
        started = time.monotonic()
        job = client.json("POST", "/api/v1/items/import", body=body,
                          headers={**alice, "Content-Type": content_type})  # fmt: skip
        wait_job(client, job["id"], alice)
        level.import_rows_per_s = IMPORT_ROWS / (time.monotonic() - started)
        started = time.monotonic()
        job = client.json("POST", "/api/v1/items/export", headers=alice)
        done = wait_job(client, job["id"], alice)
        level.exported = done["result"]["rows"]
        level.export_rows_per_s = level.exported / (time.monotonic() - started)
        level.peak_rss_mib = peak_rss_mib(pid)
    asyncio.run(_admin(port, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    return level


async def _row_at(port: int, database: str, owner: str, offset: int) -> Position:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", password=PASSWORD, database=database
    )
    try:
        found = await connection.fetchrow(
            "SELECT created_at, id FROM items WHERE owner_id = $1 "
            "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
            uuid.UUID(owner), offset,
        )  # fmt: skip
    finally:
        await connection.close()
    return Position(found["created_at"], found["id"])


def render(levels: list[Level]) -> str:
    base = levels[0]
    head = "| Request | " + " | ".join(f"{lv.rows:,} rows" for lv in levels)
    head += " | " + " | ".join(f"{lv.rows:,} / {base.rows:,}" for lv in levels[1:]) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(levels) - 1)]
    worst = 0.0
    for name in REQUESTS:
        cells = [f"{lv.latency_ms[name]:.2f} ms" for lv in levels]
        ratios = [lv.latency_ms[name] / base.latency_ms[name] for lv in levels[1:]]
        worst = max([worst, *ratios])
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{r:.2f}" for r in ratios) + " |")  # fmt: skip
    for name, attribute, unit in (
        ("import", "import_rows_per_s", "rows/s"), ("export", "export_rows_per_s", "rows/s"),
        ("peak RSS of the service", "peak_rss_mib", "MiB"),
    ):  # fmt: skip
        cells = [f"{getattr(lv, attribute):,.0f} {unit}" for lv in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |" + " |" * (len(levels) - 1))
    met = "met" if worst <= GOAL_RATIO else "not met"
    lines += [
        "",
        f"Largest ratio of a request's median latency to its latency at {base.rows:,} rows: "
        f"{worst:.2f} (goal ≤ {GOAL_RATIO}: {met}). Import: {IMPORT_ROWS:,} rows into the "
        "table as it is; export: every one of the user's items.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1,000 and 100,000 rows only")
    parser.add_argument("--huge", action="store_true", help="also 10,000,000 rows")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where scale.md goes")
    args = parser.parse_args(argv)
    sizes = [1_000, 100_000] if args.smoke else [1_000, 100_000, 1_000_000]
    if args.huge:
        sizes.append(10_000_000)
    levels = []
    with postgres() as port:
        for rows in sizes:
            print(f"measuring at {rows:,} rows", flush=True)
            levels.append(measure(port, rows, lambda line: print(line, flush=True)))
    table = render(levels)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "scale.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
