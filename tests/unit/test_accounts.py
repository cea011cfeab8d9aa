"""Accounts: changing one's password, a superuser's reset, the reset by e-mail (to a real
SMTP server in this process), and the rule behind all of them: a change signs the user
out everywhere at once, API tokens and web UI sessions alike."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.core.config import Settings
from app.db.base import utcnow
from app.db.models import PasswordReset
from app.db.session import Database
from app.services.users import ensure_superuser_standalone
from tests.factories import PASSWORD, create_user
from tests.helpers import Headers, login, make_settings
from tests.mailbox import Mailbox, smtp_server

NEW = "a-brand-new-password"
UI = "/ui"


def _sign_in(client: TestClient, username: str, password: str) -> None:
    page = client.get(f"{UI}/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    done = client.post(
        f"{UI}/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text


def test_changing_the_password_signs_out_every_token_and_session_at_once(
    client: TestClient, app: FastAPI, make_user: Callable[..., Headers]
) -> None:
    old = make_user("alice", PASSWORD)
    other_token = login(client, "alice", PASSWORD)
    with TestClient(app) as browser:
        _sign_in(browser, "alice", PASSWORD)
        assert browser.get(f"{UI}/items", follow_redirects=False).status_code == 200
        wrong = client.post(
            "/api/v1/users/me/password",
            json={"current_password": "not-the-password", "new_password": NEW},
            headers=old,
        )
        assert (wrong.status_code, wrong.json()) == (
            403,
            {"detail": "the current password is not correct"},
        )
        changed = client.post(
            "/api/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW},
            headers=old,
        )
        assert changed.status_code == 200, changed.text
        fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
        for token in (old, other_token):
            refused = client.get("/api/v1/items", headers=token)
            assert refused.status_code == 401
        assert client.get("/api/v1/items", headers=fresh).status_code == 200
        assert browser.get(f"{UI}/items", follow_redirects=False).status_code == 303
    old_login = {"username": "alice", "password": PASSWORD}
    assert client.post("/api/v1/auth/token", data=old_login).status_code == 401
    assert client.get("/api/v1/items", headers=login(client, "alice", NEW)).status_code == 200


def test_the_new_password_follows_the_password_rules(
    client: TestClient, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice", PASSWORD)
    for bad in ("short", "tab\tinside-the-password", "x" * 129):
        answer = client.post(
            "/api/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": bad},
            headers=alice,
        )
        assert answer.status_code == 422, bad
    assert client.get("/api/v1/items", headers=alice).status_code == 200  # nothing changed


def test_a_superuser_resets_a_password_and_the_user_is_signed_out(
    client: TestClient, admin_headers: Headers, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice", PASSWORD)
    bob = make_user("bob", PASSWORD)
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    path = f"/api/v1/users/{alice_id}/password"
    assert client.post(path, json={"new_password": NEW}, headers=bob).status_code == 403
    assert client.get("/api/v1/items", headers=alice).status_code == 200
    reset = client.post(path, json={"new_password": NEW}, headers=admin_headers)
    assert reset.status_code == 200, reset.text
    assert reset.json()["username"] == "alice"
    assert client.get("/api/v1/items", headers=alice).status_code == 401
    assert client.get("/api/v1/items", headers=login(client, "alice", NEW)).status_code == 200
    missing = client.post(
        "/api/v1/users/00000000-0000-0000-0000-000000000000/password",
        json={"new_password": NEW},
        headers=admin_headers,
    )
    assert missing.status_code == 404


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def mailed(
    db_path: Path, tmp_path: Path, mailbox: Mailbox
) -> Iterator[tuple[TestClient, Settings]]:
    """The service with an SMTP relay (in this process) and its superuser."""
    from app.main import create_app

    with smtp_server(mailbox) as port:
        settings = make_settings(
            tmp_path,
            f"sqlite+aiosqlite:///{db_path}",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            webui_base_url="https://app.example.com/ui",
        )
        asyncio.run(ensure_superuser_standalone(settings))
        with TestClient(create_app(settings)) as client:
            yield client, settings


def _make_user(client: TestClient, settings: Settings, name: str) -> Headers:
    create_user(settings, name, password=PASSWORD)
    return login(client, name, PASSWORD)


def _resets(settings: Settings) -> int:
    async def count() -> int:
        db = Database(settings)
        try:
            async with db.session() as session:
                return int(
                    await session.scalar(select(func.count()).select_from(PasswordReset)) or 0
                )
        finally:
            await db.dispose()

    return asyncio.run(count())


def test_a_reset_by_e_mail_sets_the_password_once_and_signs_out_everywhere(
    mailed: tuple[TestClient, Settings], mailbox: Mailbox
) -> None:
    client, settings = mailed
    alice = _make_user(client, settings, "alice")
    asked = client.post("/api/v1/auth/password-reset", json={"email": "Alice@Example.com"})
    assert asked.status_code == 202, asked.text
    [message] = mailbox.messages
    assert message["To"] == "Alice@example.com"
    token = mailbox.token()
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    assert f"https://app.example.com/ui/reset-password?token={token}" in html.get_content()
    confirm = {"token": token, "new_password": NEW}
    done = client.post("/api/v1/auth/password-reset/confirm", json=confirm)
    assert done.status_code == 200, done.text
    assert client.get("/api/v1/items", headers=alice).status_code == 401
    assert client.get("/api/v1/items", headers=login(client, "alice", NEW)).status_code == 200
    again = client.post(
        "/api/v1/auth/password-reset/confirm", json={**confirm, "new_password": "a-third-password"}
    )
    assert again.status_code == 404
    assert again.json() == {"detail": "this password reset link is not valid (used or expired)"}
    assert _resets(settings) == 0  # spent and deleted with the others of the user


def test_a_reset_answers_alike_for_every_address_and_mails_only_real_accounts(
    mailed: tuple[TestClient, Settings], mailbox: Mailbox
) -> None:
    client, settings = mailed
    _make_user(client, settings, "alice")
    known = client.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
    unknown = client.post("/api/v1/auth/password-reset", json={"email": "nobody@example.com"})
    assert (known.status_code, known.json(), sorted(known.headers.keys())) == (
        unknown.status_code,
        unknown.json(),
        sorted(unknown.headers.keys()),
    )
    assert [m["To"] for m in mailbox.messages] == ["alice@example.com"]


def test_reset_requests_are_throttled_per_address_quietly_and_per_client(
    mailed: tuple[TestClient, Settings], mailbox: Mailbox
) -> None:
    client, settings = mailed
    _make_user(client, settings, "alice")
    answers = [
        client.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
        for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [202] * 5
    assert len(mailbox.messages) == 3  # PASSWORD_RESET_REQUESTS_PER_ADDRESS: 3/hour
    for n in range(5):
        client.post("/api/v1/auth/password-reset", json={"email": f"other{n}@example.com"})
    throttled = client.post("/api/v1/auth/password-reset", json={"email": "x@example.com"})
    assert throttled.status_code == 429  # PASSWORD_RESET_REQUESTS_PER_CLIENT: 10/hour
    assert int(throttled.headers["retry-after"]) > 0


def test_an_expired_token_or_a_deactivated_account_cannot_reset(
    mailed: tuple[TestClient, Settings], mailbox: Mailbox
) -> None:
    client, settings = mailed
    _make_user(client, settings, "alice")
    client.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
    token = mailbox.token()

    async def expire() -> None:
        db = Database(settings)
        try:
            async with db.session() as session:
                await session.execute(
                    update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1))
                )
                await session.commit()
        finally:
            await db.dispose()

    asyncio.run(expire())
    late = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW}
    )
    assert late.status_code == 404
    assert (
        client.post(
            "/api/v1/auth/token", data={"username": "alice", "password": PASSWORD}
        ).status_code
        == 200
    )
    for bad in ("", "a" * 65, "has space", "x"):
        answer = client.post(
            "/api/v1/auth/password-reset/confirm", json={"token": bad, "new_password": NEW}
        )
        assert answer.status_code in (404, 422), bad


def test_expired_reset_links_are_swept(
    mailed: tuple[TestClient, Settings], mailbox: Mailbox
) -> None:
    from app.services import retention

    client, settings = mailed
    _make_user(client, settings, "alice")
    client.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
    assert _resets(settings) == 1

    async def sweep(after: timedelta) -> retention.Swept | None:
        db = Database(settings)
        try:
            return await retention.sweep(db, settings, now=utcnow() + after)
        finally:
            await db.dispose()

    kept = asyncio.run(sweep(timedelta(minutes=settings.password_reset_minutes - 1)))
    assert kept is not None
    assert kept.resets == 0
    swept = asyncio.run(sweep(timedelta(minutes=settings.password_reset_minutes + 1)))
    assert swept is not None
    assert swept.resets == 1
    assert _resets(settings) == 0
