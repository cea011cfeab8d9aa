"""Dependency checks behind /ready and /health.

Each check runs under its own timeout and reports status and latency; none raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text

from app.core.logging import describe_error
from app.db.migrate import current_revision, head_revision
from app.db.session import Database

Check = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class HealthState:
    """Process-wide facts: when it started and whether it is shutting down."""

    started_at: float = field(default_factory=time.monotonic)
    shutting_down: bool = False

    @property
    def uptime_seconds(self) -> float:
        return round(time.monotonic() - self.started_at, 3)


async def _timed(name: str, check: Check, timeout: float) -> tuple[str, dict[str, Any]]:  # noqa: ASYNC109
    started = time.perf_counter()
    try:
        details = await asyncio.wait_for(check(), timeout=timeout)
        result: dict[str, Any] = {"status": "ok", **details}
    except TimeoutError:
        result = {"status": "error", "error": f"timed out after {timeout:g}s"}
    except Exception as exc:  # a failing dependency is a report, never a 500
        result = {"status": "error", "error": describe_error(exc)}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return name, result


async def check_database(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        return {"revision": await current_revision(connection)}


def migrations_result(database: dict[str, Any]) -> dict[str, Any]:
    """ "Migrations at head", judged from the revision the database check read."""
    head = head_revision()
    if database["status"] != "ok":
        return {"status": "error", "error": "database unreachable", "head": head}
    current = database.get("revision")
    if current != head:
        return {
            "status": "error",
            "error": f"database at {current or 'no revision'}, code expects {head}: "
            "run `make migrate` (`python -m app migrate`)",
            "revision": current,
            "head": head,
        }
    return {"status": "ok", "revision": current}


async def check_redis(client: Redis) -> dict[str, Any]:
    await client.ping()
    return {}


async def run_checks(
    db: Database,
    redis: Redis | None,
    timeout: float,  # noqa: ASYNC109 - one budget per check, applied by _timed
) -> tuple[bool, dict[str, dict[str, Any]]]:
    checks: dict[str, Check] = {"database": lambda: check_database(db)}
    if redis is not None:
        checks["redis"] = lambda: check_redis(redis)
    results = dict(await asyncio.gather(*(_timed(name, c, timeout) for name, c in checks.items())))
    results["migrations"] = migrations_result(results["database"])
    if redis is None:
        results["redis"] = {"status": "skipped", "reason": "REDIS_URL not configured"}
    healthy = all(r["status"] in ("ok", "skipped") for r in results.values())
    return healthy, results
