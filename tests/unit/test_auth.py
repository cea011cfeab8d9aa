"""OAuth2 password flow, JWT validation and user management."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.helpers import login

NOBODY = "00000000-0000-0000-0000-000000000000"


def token(
    key: str, subject: str = NOBODY, minutes: int = 5, algorithm: str = "HS256", **claims: object
) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": subject,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
        "type": "access",
        **claims,
    }
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


def me_status(client: TestClient, bearer: str) -> int:
    return client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bearer}"}).status_code


def test_login_returns_a_bearer_token(
    client: TestClient, settings: Settings, admin_headers
) -> None:
    response = client.post(
        "/api/v1/auth/token",
        data={"username": settings.admin_username, "password": settings.admin_password},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_expire_minutes * 60
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == settings.admin_username
    assert me.json()["is_superuser"] is True
    assert "hashed_password" not in me.json()


def test_login_by_email(client: TestClient, settings: Settings, admin_headers) -> None:
    headers = login(client, settings.admin_email, settings.admin_password)
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_401(
    client: TestClient, admin_headers
) -> None:
    wrong = client.post("/api/v1/auth/token", data={"username": "admin", "password": "nope-nope"})
    unknown = client.post("/api/v1/auth/token", data={"username": "ghost", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "incorrect username or password"}
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_login_without_fields_is_422(client: TestClient) -> None:
    response = client.post("/api/v1/auth/token", data={"username": "admin"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]


def test_protected_routes_need_a_valid_token(
    client: TestClient, settings: Settings, admin_headers
) -> None:
    assert client.get("/api/v1/users/me").status_code == 401
    bad = client.get("/api/v1/users/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401
    assert bad.json() == {"detail": "could not validate credentials"}

    foreign = token("another-key-another-key-another-key-0000")
    assert me_status(client, foreign) == 401
    expired = token(settings.jwt_secret_key, minutes=-1, algorithm=settings.jwt_algorithm)
    assert me_status(client, expired) == 401


def test_tokens_living_longer_than_the_service_issues_are_rejected(
    client: TestClient, settings: Settings, admin_headers
) -> None:
    """The attack: a token signed with the key whose `exp` is 10^30 was accepted."""
    me = login(client, settings.admin_username, settings.admin_password)["Authorization"]
    admin_id = client.get("/api/v1/users/me", headers={"Authorization": me}).json()["id"]
    key, now = settings.jwt_secret_key, datetime.now(UTC)
    assert me_status(client, token(key, admin_id)) == 200  # the control: a normal one works
    forever = token(key, admin_id, exp=10**30)
    assert me_status(client, forever) == 401
    too_long = token(key, admin_id, minutes=settings.access_token_expire_minutes + 5)
    assert me_status(client, too_long) == 401
    no_iat = token(key, admin_id, iat=None)
    assert me_status(client, no_iat) == 401
    from_the_future = token(key, admin_id, iat=now + timedelta(hours=1), minutes=61)
    assert me_status(client, from_the_future) == 401
    assert me_status(client, token(key, admin_id, iat=10**30, exp=10**30 + 60)) == 401


def test_token_of_a_deleted_user_is_rejected(
    client: TestClient, settings: Settings, admin_headers
) -> None:
    ghost = token(settings.jwt_secret_key, subject="00000000-0000-0000-0000-000000000001")
    assert me_status(client, ghost) == 401


def test_only_a_superuser_creates_users(client: TestClient, make_user, admin_headers) -> None:
    alice = make_user("alice")
    response = client.post(
        "/api/v1/users",
        json={"username": "mallory", "email": "m@example.com", "password": "long-enough-pw"},
        headers=alice,
    )
    assert response.status_code == 403


def test_duplicate_user_is_409(client: TestClient, make_user, admin_headers) -> None:
    make_user("bob")
    response = client.post(
        "/api/v1/users",
        json={"username": "bob", "email": "other@example.com", "password": "long-enough-pw"},
        headers=admin_headers,
    )
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


def test_user_payload_is_validated(client: TestClient, admin_headers) -> None:
    response = client.post(
        "/api/v1/users",
        json={"username": "x", "email": "not-an-email", "password": "short"},
        headers=admin_headers,
    )
    assert response.status_code == 422
    fields = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert fields == {("body", "username"), ("body", "email"), ("body", "password")}


def test_superuser_creation_is_idempotent(
    client: TestClient, settings: Settings, admin_headers
) -> None:
    import asyncio

    from app.services.users import ensure_superuser_standalone

    assert asyncio.run(ensure_superuser_standalone(settings)) is False
