"""The fuzz tier (tests/fuzz) against the service on a real Postgres: NUL bytes, for one,
are refused by Postgres where SQLite stores them."""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.test_api_fuzz import fuzz, fuzz_settings, report
from tests.server import serve


def test_no_failures_on_postgres(database: str, tmp_path: Path) -> None:
    with serve(tmp_path, **fuzz_settings(DATABASE_URL=database)) as server:
        user = server.create_user("fuzzer", "fuzzer-password-1")
        report("user, Postgres", fuzz(server, user))
        report("anonymous, Postgres", fuzz(server, {}))
