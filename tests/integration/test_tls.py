"""TLS to a managed Postgres and Redis: DB_SSLMODE up to verify-full with DB_SSL_ROOT_CERT,
and REDIS_TLS with REDIS_CA_FILE, against containers serving TLS with a test CA. Each
connects over TLS with the right CA and refuses a server its CA did not sign, or (under
verify-full) a certificate for another host name."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kombu import connection as kombu_connection
from redis import Redis
from sqlalchemy import text

from app.core.config import Settings
from app.db.session import Database, unavailable
from app.main import create_app
from tests.docker_utils import Container, running, wait_until
from tests.helpers import make_settings
from tests.mailbox import Certificates, certificates

PASSWORD = secrets.token_urlsafe(16)
# Celery's own connection (kombu), as the worker and the API's queueing open it; untyped.
Connection: Any = kombu_connection.Connection


@dataclass(frozen=True)
class Servers:
    postgres: Container
    redis: Container
    trusted: Certificates  # the CA that signed both servers' certificate (for 127.0.0.1)
    untrusted: Certificates  # another CA


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("tls")
    trusted = certificates(folder)
    untrusted = certificates(tmp_path_factory.mktemp("other-ca"))
    # A test key: readable by the servers' own users, in a folder they may enter.
    folder.chmod(0o755)
    trusted.key_file.chmod(0o644)
    mount = ("--mount", f"type=bind,source={folder},target=/tls,readonly")
    # Postgres reads its key only when its own user owns it (0600): copied into place.
    place = (
        "install -d -o postgres /var/lib/postgresql/tls"
        " && install -o postgres -m 0600 /tls/server.crt /tls/server.key /var/lib/postgresql/tls/"
        " && exec docker-entrypoint.sh postgres -c ssl=on"
        " -c ssl_cert_file=/var/lib/postgresql/tls/server.crt"
        " -c ssl_key_file=/var/lib/postgresql/tls/server.key"
    )
    with (
        running(
            "postgres:15-alpine", "-c", place,
            env={"POSTGRES_PASSWORD": PASSWORD},
            options=(*mount, "--publish", "127.0.0.1::5432", "--tmpfs",
                     "/var/lib/postgresql/data", "--entrypoint", "sh"),
            publish=False,
        ) as postgres,
        running(
            "redis:7-alpine", "redis-server", "--port", "0", "--tls-port", "6379",
            "--tls-cert-file", "/tls/server.crt", "--tls-key-file", "/tls/server.key",
            "--tls-auth-clients", "no",
            options=(*mount, "--publish", "127.0.0.1::6379"), publish=False,
        ) as redis,
    ):  # fmt: skip
        found = Servers(postgres, redis, trusted, untrusted)
        wait_until(lambda: _ssl_in_use(_db_settings(found, "require")), 60, "Postgres over TLS")
        yield found


def _db_settings(
    servers: Servers, mode: str, ca: Path | None = None, host: str = "127.0.0.1"
) -> Settings:
    return make_settings(
        Path("/nonexistent"), "", db_host=host, db_port=servers.postgres.port(5432),
        db_user="postgres", db_password=PASSWORD, db_name="postgres", db_sslmode=mode,
        db_ssl_root_cert=str(ca or ""), db_connect_timeout_seconds=30,
    )  # fmt: skip


def _ssl_in_use(settings: Settings) -> bool:
    async def read() -> bool:
        db = Database(settings)
        try:
            async with db.session() as session:
                query = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                return bool(await session.scalar(query))
        finally:
            await db.dispose()

    return asyncio.run(read())


def _refusal(settings: Settings) -> Exception:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any refusal; checked below
        _ssl_in_use(settings)
    return caught.value


def test_postgres_is_reached_over_tls_verified_up_to_the_host_name(servers: Servers) -> None:
    trusted, untrusted = servers.trusted.ca_file, servers.untrusted.ca_file
    assert _ssl_in_use(_db_settings(servers, "verify-full", trusted))
    assert _ssl_in_use(_db_settings(servers, "verify-ca", trusted))
    # require encrypts without verifying: the other CA does not matter to it.
    assert _ssl_in_use(_db_settings(servers, "require", untrusted))
    assert not _ssl_in_use(_db_settings(servers, "disable"))
    # A server another CA signed, and (verify-full only) a certificate for another name:
    # refused as the database being unavailable (503), never a 500.
    for refused in (
        _db_settings(servers, "verify-full", untrusted),
        _db_settings(servers, "verify-ca", untrusted),
        _db_settings(servers, "verify-full", trusted, host="localhost"),
    ):
        error = _refusal(refused)
        assert unavailable(error), repr(error)
        assert "certificate" in str(error).lower() or "hostname" in str(error).lower(), error
    assert _ssl_in_use(_db_settings(servers, "verify-ca", trusted, host="localhost"))


def _redis_settings(servers: Servers, ca: Path) -> Settings:
    return make_settings(
        Path("/nonexistent"), "sqlite+aiosqlite:///:memory:", redis_host="127.0.0.1",
        redis_port=servers.redis.port(6379), redis_tls=True, redis_ca_file=str(ca),
    )  # fmt: skip


def test_redis_is_reached_over_tls_by_every_client_and_refuses_another_ca(
    servers: Servers, db_path: Path
) -> None:
    good = _redis_settings(servers, servers.trusted.ca_file)
    bad = _redis_settings(servers, servers.untrusted.ca_file)
    url = good.resolved_redis_url
    assert url is not None
    assert url.startswith("rediss://")
    # The cache's client, the broker and the result backend (Celery), all one URL's.
    assert Redis.from_url(url, socket_timeout=30).ping()
    for broker in (good.resolved_broker_url, good.resolved_result_backend):
        with Connection(broker, connect_timeout=30) as connection:
            connection.ensure_connection(max_retries=1)
    with pytest.raises(Exception, match=r"(?i)certificate"):
        Redis.from_url(bad.resolved_redis_url or "", socket_timeout=30).ping()
    with (
        Connection(bad.resolved_broker_url, connect_timeout=30) as connection,
        pytest.raises(Exception, match=r"(?i)certificate"),
    ):
        connection.ensure_connection(max_retries=1)
    # The service as a whole: ready with the right CA, a 503 naming Redis with another.
    for settings, status in ((good, 200), (bad, 503)):
        local = settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{db_path}"})
        with TestClient(create_app(local)) as client:
            ready = client.get("/ready")
        assert ready.status_code == status, ready.text
        checks: dict[str, Any] = ready.json()["checks"]
        assert checks["redis"]["status"] == ("ok" if status == 200 else "error"), checks
        assert checks["database"]["status"] == "ok", checks
