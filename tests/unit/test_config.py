"""Settings: defaults, derived URLs, production refusals, *_FILE secrets, redaction."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from app.core.config import (
    DEV_SECRET_KEY,
    REDACTED,
    SQLITE_DEFAULT_URL,
    ConfigError,
    Settings,
    load_settings,
)

STRONG = "s3cr3t-" + "x" * 40


def strict_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("JWT_SECRET_KEY", STRONG + "-jwt")
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def test_development_defaults_need_no_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENVIRONMENT", "development")
    settings = load_settings()
    assert settings.sqlalchemy_url == SQLITE_DEFAULT_URL
    assert settings.resolved_redis_url is None
    # Not a key written in the source: a random one, kept beside the database.
    key_file = tmp_path / "data" / "secret_key"
    assert settings.secret_key == key_file.read_text().strip() != DEV_SECRET_KEY
    assert len(settings.secret_key) >= 64
    assert settings.jwt_secret_key == settings.secret_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings().secret_key == settings.secret_key  # the next start: the same key
    elsewhere = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/other/app.db")
    assert elsewhere.secret_key not in (settings.secret_key, DEV_SECRET_KEY)
    assert load_settings(secret_key=STRONG).secret_key == STRONG  # configured: used as is


def test_a_development_server_refuses_tokens_signed_with_the_key_in_the_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uuid

    from fastapi.testclient import TestClient

    from app.core.security import create_access_token
    from app.main import create_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENVIRONMENT", "development")
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/app.db")
    forged = create_access_token(
        load_settings(environment="test", secret_key=DEV_SECRET_KEY), uuid.uuid4(), 0
    )
    with TestClient(create_app(settings)) as client:
        answer = client.get("/api/v1/items", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401


def test_a_generated_key_that_cannot_be_kept_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ENVIRONMENT", "development")
    with pytest.raises(ConfigError, match="set SECRET_KEY or SECRET_KEY_FILE"):
        load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/file/app.db")


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_strict_environments_refuse_missing_secrets(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    with pytest.raises(ConfigError, match=r"^SECRET_KEY is required in " + environment):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECRET_KEY", "CHANGE_ME_PROD_SECRET_KEY_MIN_32_CHARS", "SECRET_KEY holds a placeholder"),
        ("JWT_SECRET_KEY", "too-short", "JWT_SECRET_KEY is too short"),
        ("DB_PASSWORD", "CHANGE_ME_PROD_DB_PASSWORD", "DB_PASSWORD holds a placeholder"),
        ("ADMIN_PASSWORD", "changeme", "ADMIN_PASSWORD holds a placeholder"),
        ("REDIS_URL", "redis://:CHANGE_ME@redis:6379/0", "REDIS_URL holds a placeholder"),
        ("DEBUG", "true", "DEBUG=true is refused"),
    ],
)
def test_production_refuses_placeholders_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    strict_env(monkeypatch, **{variable: value})
    with pytest.raises(ConfigError, match=message) as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_production_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    strict_env(monkeypatch, DB_PASSWORD="a-real-password", ADMIN_PASSWORD="another-real-one")
    settings = load_settings()
    assert settings.secret_key == STRONG
    assert settings.admin_password == "another-real-one"


def test_secret_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text(STRONG + "\n")  # the trailing newline editors add is stripped
    strict_env(monkeypatch)
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    monkeypatch.setenv("DB_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert settings.secret_key == STRONG
    assert settings.db_password == STRONG


def test_secret_file_placeholder_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text("CHANGE_ME_PROD_SECRET_KEY_MIN_32_CHARS")
    strict_env(monkeypatch)
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    with pytest.raises(ConfigError, match="SECRET_KEY holds a placeholder"):
        load_settings()


def test_both_value_and_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text(STRONG)
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    with pytest.raises(ConfigError, match="both SECRET_KEY and SECRET_KEY_FILE are set"):
        load_settings()


def test_unreadable_secret_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JWT_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^JWT_SECRET_KEY_FILE=.*missing cannot be read"):
        load_settings()


def test_only_secrets_have_a_file_form(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "name"
    path.write_text("FromFile")
    monkeypatch.setenv("APP_NAME_FILE", str(path))
    assert load_settings().app_name == "Shipshape"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "loud"),
        ("ENVIRONMENT", "prod-ish"),
        ("BASE_URL", "ftp://x"),
        ("ADMIN_EMAIL", "nobody"),
    ],
)
def test_invalid_values_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=rf"^{variable}: ") as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_database_url_from_parts_quotes_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_USER", "app")
    monkeypatch.setenv("DB_PASSWORD", "p@ss/word")
    monkeypatch.setenv("DB_NAME", "shop")
    settings = load_settings()
    assert settings.sqlalchemy_url == "postgresql+asyncpg://app:p%40ss%2Fword@db:5432/shop"
    assert not settings.is_sqlite


def test_database_url_without_a_password_has_no_empty_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_PORT", "6432")
    monkeypatch.setenv("DB_USER", "app user")
    monkeypatch.setenv("DB_PASSWORD", "")
    monkeypatch.setenv("DB_NAME", "shop")
    url = load_settings().sqlalchemy_url
    assert url == "postgresql+asyncpg://app%20user@db.internal:6432/shop"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h/d", "postgresql+asyncpg://u:p@h/d"),
        ("postgresql://u:p@h:5433/d", "postgresql+asyncpg://u:p@h:5433/d"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_database_url_forms_are_normalised(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    monkeypatch.setenv("DB_HOST", "ignored-when-a-url-is-given")
    assert load_settings().sqlalchemy_url == expected


def test_unsupported_database_scheme_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:p@h/d")
    with pytest.raises(ConfigError, match="scheme 'mysql' is not supported"):
        _ = load_settings().sqlalchemy_url


def test_redis_url_from_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "redis")
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    assert load_settings().resolved_redis_url == "redis://:pw@redis:6379/0"


def test_redacted_config_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    strict_env(
        monkeypatch,
        DB_HOST="db",
        DB_PASSWORD="db-password-value",
        REDIS_HOST="redis",
        REDIS_PASSWORD="redis-password-value",
        ADMIN_PASSWORD="admin-password-value",
    )
    redacted = load_settings().redacted()
    dumped = json.dumps(redacted)
    for secret in (STRONG, "db-password-value", "redis-password-value", "admin-password-value"):
        assert secret not in dumped
    assert redacted["SECRET_KEY"] == REDACTED
    assert redacted["DATABASE_URL"] == f"postgresql+asyncpg://postgres:{REDACTED}@db:5432/shipshape"
    assert redacted["REDIS_URL"] == f"redis://:{REDACTED}@redis:6379/0"
    assert redacted["ENVIRONMENT"] == "production"


def test_cors_origins_are_split() -> None:
    settings = Settings(cors_origins=" https://a.example , https://b.example,")
    assert settings.cors_origin_list == ["https://a.example", "https://b.example"]


def test_an_uninstalled_source_tree_reports_its_pyprojects_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The dev stack runs the mounted source tree, which is not installed: it reported
    0.0.0+unknown in /health and the API document."""
    from importlib import metadata

    from app.core import config as module

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert module._package_version() == project
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2.3.4"\n')
    assert module._source_version(tmp_path) == "2.3.4"
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert module._source_version(tmp_path) is None
    assert module._source_version(tmp_path / "nowhere") is None


def test_redis_tls_makes_a_verifying_rediss_url_for_every_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.mailbox import certificates

    ca = certificates(tmp_path).ca_file
    monkeypatch.setenv("REDIS_HOST", "cache.example.com")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss")
    assert load_settings().resolved_redis_url == "redis://:p%40ss@cache.example.com:6379/0"
    monkeypatch.setenv("REDIS_TLS", "true")
    assert load_settings().resolved_redis_url == (
        "rediss://:p%40ss@cache.example.com:6379/0?ssl_cert_reqs=required&ssl_check_hostname=true"
    )
    monkeypatch.setenv("REDIS_CA_FILE", str(ca))
    settings = load_settings()
    query = (
        f"ssl_cert_reqs=required&ssl_check_hostname=true&ssl_ca_certs={str(ca).replace('/', '%2F')}"
    )
    assert settings.resolved_redis_url == f"rediss://:p%40ss@cache.example.com:6379/0?{query}"
    # The broker and the result backend: the same server and checks, their own database.
    assert settings.resolved_broker_url == f"rediss://:p%40ss@cache.example.com:6379/1?{query}"
    assert settings.resolved_result_backend == f"rediss://:p%40ss@cache.example.com:6379/2?{query}"


@pytest.mark.parametrize("var", ["DB_SSL_ROOT_CERT", "REDIS_CA_FILE"])
def test_a_ca_file_that_cannot_serve_is_refused_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str
) -> None:
    monkeypatch.setenv(var, str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=rf"^{var}=.*missing.pem cannot be read: No such file"):
        load_settings()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    monkeypatch.setenv(var, str(garbage))
    with pytest.raises(ConfigError, match=rf"^{var}=.*garbage.pem holds no PEM certificate$"):
        load_settings()


def test_db_sslmode_takes_libpqs_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from app.db.session import postgres_ssl

    monkeypatch.setenv("DB_HOST", "db")
    assert postgres_ssl(load_settings()) == "prefer"
    monkeypatch.setenv("DB_SSLMODE", "disable")
    assert postgres_ssl(load_settings()) is False
    monkeypatch.setenv("DB_SSLMODE", "require")
    required = postgres_ssl(load_settings())
    assert isinstance(required, ssl.SSLContext)
    assert (required.verify_mode, required.check_hostname) == (ssl.CERT_NONE, False)
    for mode, hostname in (("verify-ca", False), ("verify-full", True)):
        monkeypatch.setenv("DB_SSLMODE", mode)
        verified = postgres_ssl(load_settings())
        assert isinstance(verified, ssl.SSLContext)
        assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, hostname)
    monkeypatch.setenv("DB_SSLMODE", "verify_full")
    with pytest.raises(ConfigError, match="DB_SSLMODE"):
        load_settings()
