"""JSON log lines, request ids, the startup config dump and the 500 path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import load_settings
from app.main import create_app


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_request_id_is_generated_and_returned(client: TestClient) -> None:
    first = client.get("/live").headers["x-request-id"]
    second = client.get("/live").headers["x-request-id"]
    assert len(first) == 32
    assert first != second


def test_caller_request_id_is_kept_and_logged(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = client.get("/live", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    access = [r for r in json_lines(capsys.readouterr().out) if r["logger"] == "app.access"]
    assert access[-1]["request_id"] == "trace-42"
    assert access[-1]["path"] == "/live"
    assert access[-1]["status"] == 200
    assert {"ts", "level", "message", "method", "duration_ms"} <= access[-1].keys()


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
    records = json_lines(capsys.readouterr().out)
    starting = next(r for r in records if r["message"] == "starting")
    assert starting["config"]["SECRET_KEY"] == "********"
    assert starting["config"]["ADMIN_PASSWORD"] == "********"
    assert starting["config"]["ENVIRONMENT"] == "test"
    assert "k" * 40 not in json.dumps(records)
    assert "admin-password-value" not in json.dumps(records)


def _app_with_failing_route(db_path: Path, debug: bool):  # type: ignore[no-untyped-def]
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
    records = json_lines(capsys.readouterr().out)
    error = next(r for r in records if r["logger"] == "app.error")
    assert error["request_id"] == "req-500"
    assert error["exc_type"] == "RuntimeError"
    assert "kaboom" in error["exc_info"]
