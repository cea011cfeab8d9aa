"""/live, /ready and /health, healthy and failing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import cast

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.config import Settings, load_settings
from app.db.migrate import downgrade, head_revision
from app.main import create_app


def test_live_does_no_io(client: TestClient, db_path: Path) -> None:
    shutil.rmtree(db_path.parent)  # even with the database gone
    response = client.get("/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_reports_each_check(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["migrations"] == {"status": "ok", "revision": head_revision()}
    assert body["checks"]["redis"]["status"] == "skipped"


def test_ready_is_503_when_the_database_file_is_unreachable(
    client: TestClient, db_path: Path
) -> None:
    assert client.get("/ready").status_code == 200
    shutil.rmtree(db_path.parent)
    response = client.get("/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "error"
    assert "unable to open database file" in checks["database"]["error"]
    assert checks["migrations"]["status"] == "error"


def test_ready_is_503_when_migrations_are_behind(client: TestClient, settings: Settings) -> None:
    downgrade(settings, "base")
    response = client.get("/ready")
    assert response.status_code == 503
    migrations = response.json()["checks"]["migrations"]
    assert migrations["status"] == "error"
    assert "no revision" in migrations["error"]
    assert "python -m app migrate" in migrations["error"]


def test_ready_is_503_while_shutting_down(client: TestClient) -> None:
    cast(FastAPI, client.app).state.health.shutting_down = True
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["shutdown"]["status"] == "error"
    assert client.get("/live").status_code == 200


def test_unreachable_redis_is_reported_within_the_timeout(db_path: Path) -> None:
    settings = load_settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_path}",
        redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        ready_timeout_seconds=1,
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    redis = response.json()["checks"]["redis"]
    assert redis["status"] == "error"
    assert redis["latency_ms"] < 1500
    assert response.json()["checks"]["database"]["status"] == "ok"


def test_health_is_the_full_report_with_build_facts(db_path: Path) -> None:
    settings = load_settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_path}",
        build_version="1.2.3",
        git_commit="abc1234",
        app_name="Shipshape Test",
        metrics_token="operator-token",
    )
    with TestClient(create_app(settings)) as client:
        body = client.get("/health", headers={"Authorization": "Bearer operator-token"}).json()
    assert body["status"] == "ok"
    assert body["service"] == "Shipshape Test"
    assert body["version"] == "1.2.3"
    assert body["git_commit"] == "abc1234"
    assert body["environment"] == "test"
    assert body["uptime_seconds"] >= 0
    assert body["checks"]["database"]["latency_ms"] >= 0


def test_version_defaults_to_the_package_version(app) -> None:
    from importlib.metadata import version

    with TestClient(app, client=("127.0.0.1", 5000)) as local:  # an allowed network
        assert local.get("/health").json()["version"] == version("shipshape")


def test_health_details_and_metrics_are_for_operators_only(db_path: Path) -> None:
    """The attack: reached directly, the app told anyone its version, commit, environment
    and database latency, and served 150 KB of metrics."""
    settings = load_settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_path}",
        metrics_token="operator-token",
        metrics_allowed_networks="10.0.0.0/8",
    )
    app = create_app(settings)
    with (
        TestClient(app, client=("203.0.113.5", 5000)) as outsider,
        TestClient(app, client=("10.1.2.3", 5000)) as scraper,
    ):
        assert outsider.get("/health").json() == {"status": "ok"}
        assert outsider.get("/metrics").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert outsider.get("/metrics", headers=wrong).status_code == 401
        assert outsider.get("/health", headers=wrong).json() == {"status": "ok"}
        token = {"Authorization": "Bearer operator-token"}
        assert outsider.get("/metrics", headers=token).status_code == 200
        assert "version" in outsider.get("/health", headers=token).json()
        assert scraper.get("/metrics").status_code == 200  # from an allowed network
        assert "version" in scraper.get("/health").json()


def test_the_root_page_says_where_the_api_and_its_documentation_are(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["docs"] == "/docs"
    assert body["api"] == "/api/v1"
    assert client.get(body["openapi"]).json()["info"]["title"] == body["name"]
    assert client.get(body["docs"]).status_code == 200
    assert client.get(body["ready"]).status_code == 200
    head = client.head("/")  # uptime checks and `curl -I` ask with HEAD: 200, not 405
    assert (head.status_code, head.content) == (200, b"")
    assert client.get(body["ui"], follow_redirects=False).status_code == 303  # to its items


def test_openapi_json_at_the_root_redirects_to_the_api_schema(client: TestClient) -> None:
    response = client.get("/openapi.json", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/api/v1/openapi.json"


def test_health_is_503_with_retry_after_while_a_dependency_is_down(db_path: Path) -> None:
    """/health is the full report, and its status is the truth: a database that went away
    (or a stopping process) turns it 503 "degraded" for everyone, operators included."""
    settings = load_settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{db_path}",
        metrics_token="operator-token",
    )
    token = {"Authorization": "Bearer operator-token"}
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        shutil.rmtree(db_path.parent)
        for headers in ({}, token):
            response = client.get("/health", headers=headers)
            assert response.status_code == 503, headers
            assert response.headers["Retry-After"].isdigit()
            assert response.json()["status"] == "degraded"
        assert client.get("/health", headers=token).json()["checks"]["database"]["status"] == (
            "error"
        )
        assert client.get("/live").status_code == 200


def test_health_is_503_while_shutting_down(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    cast(FastAPI, client.app).state.health.shutting_down = True
    response = client.get("/health")
    assert (response.status_code, response.json()) == (503, {"status": "degraded"})
