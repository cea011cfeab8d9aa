"""Brute force and login floods: throttled failures, bounded password hashing.

The attacks: 40 wrong passwords in 11.6 s were all answered 401 and the right one then
worked; and a burst of failed logins ran one 64 MiB argon2 hash per thread until the
container's memory limit killed its workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core import resources, security
from app.core.config import Settings
from app.services.users import ensure_superuser_standalone

TOKEN = "/api/v1/auth/token"


@dataclass
class Caller:
    """Requests from one client address (one app, one event loop, many addresses)."""

    client: TestClient
    address: str

    def post(self, url: str, data: dict[str, str]):
        return self.client.post(url, data=data, headers={"X-Test-Client": self.address})


def _from_address(app: FastAPI) -> ASGIApp:
    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope = {**scope, "client": (value.decode(), 50000)}
        await app(scope, receive, send)

    return asgi


@pytest.fixture
def clients(app: FastAPI, settings: Settings) -> Iterator[tuple[Caller, Caller]]:
    """The attacker's client and the real user's, from two addresses."""
    with TestClient(_from_address(app)) as client:
        asyncio.run(ensure_superuser_standalone(settings))
        yield Caller(client, "203.0.113.7"), Caller(client, "198.51.100.9")


def attempt(caller: Caller | TestClient, username: str, password: str):
    return caller.post(TOKEN, data={"username": username, "password": password})


def test_repeated_failures_are_throttled_without_locking_out_the_real_user(
    clients: tuple[Caller, Caller], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    attacker, user = clients
    statuses = [attempt(attacker, "admin", f"guess-{n}").status_code for n in range(40)]
    assert statuses[:5] == [401] * 5  # LOGIN_FAILURES_PER_ACCOUNT: 5/minute
    assert set(statuses[5:]) == {429}
    throttled = attempt(attacker, "admin", settings.admin_password)
    assert throttled.status_code == 429  # even the right password, from that address
    assert int(throttled.headers["Retry-After"]) > 0
    assert throttled.json() == {"detail": "too many failed logins; try again later"}
    # The real user, elsewhere, is not locked out.
    assert attempt(user, "admin", settings.admin_password).status_code == 200
    assert any(r.getMessage() == "login throttled" for r in caplog.records)


def test_a_success_clears_the_failures(clients: tuple[Caller, Caller], settings: Settings) -> None:
    _, user = clients
    for round_ in range(3):
        for n in range(4):
            assert attempt(user, "admin", f"typo-{round_}-{n}").status_code == 401
        assert attempt(user, "admin", settings.admin_password).status_code == 200


def test_password_spraying_over_many_accounts_is_throttled_per_address(
    clients: tuple[Caller, Caller],
) -> None:
    attacker, user = clients
    statuses = [attempt(attacker, f"user{n}", "Winter2026!").status_code for n in range(35)]
    assert statuses[:30] == [401] * 30  # LOGIN_FAILURES_PER_CLIENT: 30/minute
    assert set(statuses[30:]) == {429}
    assert attempt(user, "user1", "Winter2026!").status_code == 401  # another address


def test_hashing_beyond_the_slots_is_refused_quickly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(security, "_hashing", security._hashing)  # restored afterwards
    security.configure_password_hashing(
        settings.model_copy(update={"password_hash_concurrency": 1})
    )
    security._hashing = dataclasses.replace(security._hashing, wait_seconds=0.05)

    async def contend() -> None:
        async with security._hashing_slot():  # the only slot is taken
            with pytest.raises(security.HashingBusy):
                await security.verify_password("x", None)
        assert (await security.verify_password("x", None)) == (False, None)  # free again

    asyncio.run(contend())


def test_a_busy_hasher_is_a_503_with_retry_after(
    client: TestClient, admin_headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def busy(*_: object) -> tuple[bool, None]:
        raise security.HashingBusy

    monkeypatch.setattr("app.services.users.verify_password", busy)
    response = attempt(client, "admin", "whatever")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"detail": "too many logins at once; try again shortly"}


def test_a_hash_with_other_parameters_is_upgraded_at_login(
    client: TestClient, settings: Settings, admin_headers
) -> None:
    import sqlite3

    old = PasswordHash((Argon2Hasher(memory_cost=1024, time_cost=3),)).hash(settings.admin_password)
    database = settings.sqlalchemy_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE users SET hashed_password = ? WHERE username = 'admin'", (old,))
    assert attempt(client, "admin", settings.admin_password).status_code == 200
    with sqlite3.connect(database) as connection:
        (stored,) = connection.execute(
            "SELECT hashed_password FROM users WHERE username = 'admin'"
        ).fetchone()
    assert stored != old
    assert f"m={settings.password_hash_memory_kib},t={settings.password_hash_time_cost}" in stored


@pytest.mark.parametrize("limit_mib", [256, 512, 1024, 4096])
def test_the_automatic_slots_keep_hashing_within_a_quarter_of_the_memory_limit(
    monkeypatch: pytest.MonkeyPatch, limit_mib: int
) -> None:
    from app.core.config import load_settings

    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: limit_mib * 2**20)
    defaults = load_settings(environment="test")
    assert (defaults.password_hash_memory_kib, defaults.password_hash_time_cost) == (19456, 2)
    processes = defaults.web_concurrency or defaults.max_workers
    hashing = defaults.hash_concurrency * processes * defaults.password_hash_memory_kib * 1024
    assert defaults.hash_concurrency >= 1
    assert hashing <= max(limit_mib * 2**20 // 4, processes * 19456 * 1024)


def test_failed_logins_are_logged_as_security_events(
    client: TestClient, admin_headers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.security")
    attempt(client, "admin", "wrong")
    [record] = [r for r in caplog.records if r.name == "app.security"]
    assert record.getMessage() == "login failed"
