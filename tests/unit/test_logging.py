"""JSON log lines, request ids, the startup config dump and the 500 path."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.config import load_settings
from app.core.logging import StdoutHandler
from app.main import create_app


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def logged(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Records written so far, including lines still waiting for their loop iteration."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return json_lines(capsys.readouterr().out)


def test_request_id_is_generated_and_returned(client: TestClient) -> None:
    first = client.get("/live").headers["x-request-id"]
    second = client.get("/live").headers["x-request-id"]
    assert len(first) == 32
    assert first != second


def test_caller_request_id_is_kept_and_logged(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = client.get("/api/v1/openapi.json", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    access = [r for r in logged(capsys) if r["logger"] == "app.access"]
    assert access[-1]["request_id"] == "trace-42"
    assert access[-1]["path"] == "/api/v1/openapi.json"
    assert access[-1]["status"] == 200
    assert {"ts", "level", "message", "method", "duration_ms"} <= access[-1].keys()


@pytest.mark.parametrize("log_probes", [False, True])
def test_successful_probes_are_access_logged_only_when_asked(
    db_path: Path, capsys: pytest.CaptureFixture[str], log_probes: bool
) -> None:
    settings = load_settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_path}",
        access_log_probes=log_probes,
    )
    with TestClient(create_app(settings)) as client:
        capsys.readouterr()
        assert client.get("/live").status_code == 200
        cast(FastAPI, client.app).state.health.shutting_down = True  # /ready now fails: 503
        assert client.get("/ready").status_code == 503
    paths = [r["path"] for r in logged(capsys) if r["logger"] == "app.access"]
    assert paths == (["/live", "/ready"] if log_probes else ["/ready"])


def test_unsafe_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/live", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"] != "bad id with spaces"


def test_startup_logs_the_redacted_config(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_path}",
        secret_key="k" * 40,
        admin_password="admin-password-value",
    )
    with TestClient(create_app(settings)):
        pass
    records = logged(capsys)
    starting = next(r for r in records if r["message"] == "starting")
    assert starting["config"]["SECRET_KEY"] == "********"
    assert starting["config"]["ADMIN_PASSWORD"] == "********"
    assert starting["config"]["ENVIRONMENT"] == "test"
    assert "k" * 40 not in json.dumps(records)
    assert "admin-password-value" not in json.dumps(records)


def _app_with_failing_route(db_path: Path, debug: bool):
    app = create_app(
        load_settings(
            environment="test", database_url=f"sqlite+aiosqlite:///{db_path}", debug=debug
        )
    )

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    return app


@pytest.mark.parametrize("debug", [False, True])
def test_unhandled_error_is_a_json_500_with_the_request_id(
    db_path: Path, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    with TestClient(
        _app_with_failing_route(db_path, debug), raise_server_exceptions=False
    ) as client:
        response = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "internal server error"
    assert body["request_id"] == "req-500"
    assert ("error" in body) is debug
    records = logged(capsys)
    error = next(r for r in records if r["logger"] == "app.error")
    assert error["request_id"] == "req-500"
    assert error["exc_type"] == "RuntimeError"
    assert "kaboom" in error["exc_info"]


def test_lines_of_one_loop_iteration_are_written_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stdout", Recording())
    handler = StdoutHandler()
    logger = logging.getLogger("test.batching")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(handler)

    async def scenario() -> tuple[int, int, int]:
        logger.info("one")
        logger.info("two")
        before = len(writes)
        await asyncio.sleep(0)  # the loop runs the scheduled write
        after_iteration = len(writes)
        logger.error("at once")
        return before, after_iteration, len(writes)

    try:
        before, after_iteration, after_error = asyncio.run(scenario())
        logger.info("outside a loop")
    finally:
        logger.removeHandler(handler)
    assert before == 0  # nothing written while the iteration runs
    assert after_iteration == 1
    assert writes[0].count("\n") == 2
    assert after_error == 2  # an error does not wait
    assert len(writes) == 3
    assert "outside a loop" in writes[2]
