"""Fast-tier helpers: a superuser, ordinary users and their auth headers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.db.session import Database
from app.services.users import ensure_superuser

Headers = dict[str, str]


def login(client: TestClient, username: str, password: str) -> Headers:
    response = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def admin_headers(client: TestClient, settings: Settings) -> Headers:
    async def create() -> None:
        db = Database(settings)
        try:
            async with db.session() as session:
                await ensure_superuser(session, settings)
        finally:
            await db.dispose()

    asyncio.run(create())
    return login(client, settings.admin_username, settings.admin_password)


@pytest.fixture
def make_user(client: TestClient, admin_headers: Headers) -> Callable[..., Headers]:
    def make(username: str, password: str = "correct-horse-battery", **extra: Any) -> Headers:
        response = client.post(
            "/api/v1/users",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": password,
                **extra,
            },
            headers=admin_headers,
        )
        assert response.status_code == 201, response.text
        return login(client, username, password)

    return make
