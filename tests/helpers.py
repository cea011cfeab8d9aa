"""Helpers for the tests of every tier: settings for one test, logging in, and skipping a
check this machine cannot run. (Fixtures live in the conftest.py files; helpers here.)"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from app.core.config import Settings

Headers = dict[str, str]


def tools_folder(folder: Path, real: Iterable[str] = (), **fakes: str) -> str:
    """A folder for PATH holding the named real tools (Python: this interpreter) and fake
    ones, each a shell script's body: what a script sees in a container, or a failing step."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in real:
        found = sys.executable if tool.startswith("python") else shutil.which(tool)
        assert found, f"{tool} is not installed here"
        (folder / tool).symlink_to(found)
    for name, body in fakes.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return str(folder)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """A check this machine cannot run: skipped with the reason, but under CI a failure (CI
    must not go green by skipping)."""
    if in_ci():
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for one test: its own database, upload and storage folders, fast retries."""
    from app.core.config import load_settings

    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "uploads_dir": str(tmp_path / "uploads"),
        "storage_dir": str(tmp_path / "storage"),
        "webhook_backoff_seconds": 0,
        # Cheap hashing keeps the fast tier fast; tests of hashing itself set their own.
        "password_hash_memory_kib": 64,
        "password_hash_time_cost": 1,
        **overrides,
    }
    return load_settings(**values)


def count_items(settings: Settings) -> int:
    """How many items the database holds (a listing gives no total), read directly."""
    import asyncio

    from sqlalchemy import func, select

    from app.db.models import Item
    from app.db.session import Database

    async def count() -> int:
        db = Database(settings)
        try:
            async with db.session() as session:
                return int(await session.scalar(select(func.count()).select_from(Item)) or 0)
        finally:
            await db.dispose()

    return asyncio.run(count())


def every_row(client: TestClient, path: str, headers: Headers) -> list[dict[str, Any]]:
    """Every row of a listing, page after page (its largest page size), by cursor."""
    rows: list[dict[str, Any]] = []
    page: dict[str, Any] = {"next": None}
    while True:
        params = {"limit": 100, **({"cursor": page["next"]} if page["next"] else {})}
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["items"]
        if not page["next"]:
            return rows


# Logging in through the API, for every HTTP client the tests use: `login_form` is the
# request's body (sent with LOGIN_HEADERS to LOGIN_PATH), `bearer` reads the answer.
LOGIN_PATH = "/api/v1/auth/token"
LOGIN_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def login_form(username: str, password: str) -> bytes:
    return urllib.parse.urlencode({"username": username, "password": password}).encode()


def bearer(status: int, body: bytes | str) -> Headers:
    """The Authorization header from a token request's answer, which must be a 200."""
    assert status == 200, body
    return {"Authorization": f"Bearer {json.loads(body)['access_token']}"}


def login(client: TestClient, username: str, password: str) -> Headers:
    answer = client.post(LOGIN_PATH, content=login_form(username, password), headers=LOGIN_HEADERS)
    return bearer(answer.status_code, answer.content)


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1 (any free port) in a thread, for the length of the
    block. It looks for shutdown every 10 ms: the standard 0.5 s poll would be paid by every
    test that uses one."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class Instruction:
    """One instruction of a Dockerfile: continuation lines joined, comments left out."""

    keyword: str  # FROM, RUN, ...
    value: str
    stage: str  # the stage's name (FROM ... AS name), or its base image when it has none

    @property
    def flags(self) -> list[str]:
        """The leading --options (RUN --mount=..., COPY --from=...)."""
        flags = []
        for word in self.value.split():
            if not word.startswith("--"):
                break
            flags.append(word)
        return flags

    @property
    def command(self) -> str:
        """The value without its leading --options."""
        return self.value.split(None, len(self.flags))[-1]


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, parsed by dockerfile-parse: checks read what Docker
    reads, so a word in a comment never satisfies them."""
    from dockerfile_parse import DockerfileParser

    parsed = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), env_replace=False)
    instructions, stage = [], ""
    for entry in parsed.structure:
        keyword, value = entry["instruction"], entry["value"]
        if keyword == "COMMENT":
            continue
        if keyword == "FROM":
            stage = value.split()[-1]
        instructions.append(Instruction(keyword, value, stage))
    return instructions
