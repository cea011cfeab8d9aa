"""Service configuration: one settings class, read from the environment.

Every variable is documented in the `.env.*.example` files (a test keeps the two in
step) and in the configuration table of docs/configuration.md (generated from this class).

Secrets can also be given as files: for every secret `X`, `X_FILE` names a file whose
content is the value (Docker and Swarm secrets mount under /run/secrets/). Setting both
`X` and `X_FILE` is an error, as in the official database images.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import ssl
import tomllib
from enum import StrEnum
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.core import resources
from app.core.text import Email

SQLITE_DEFAULT_URL = "sqlite+aiosqlite:///./data/app.db"

# Values that are clearly not real secrets. The test environment runs on this key (tests
# sign tokens for servers they start); production refuses it at start. Development gets a
# random key of its own (`development_key`).
DEV_SECRET_KEY = "dev-only-secret-key-CHANGE_ME-not-for-production-0000"  # noqa: S105
# The key development generates, in its data directory (beside the SQLite database).
GENERATED_KEY_FILE = "secret_key"
DEV_ADMIN_PASSWORD = "CHANGE_ME_DEV_ADMIN_PASSWORD"  # noqa: S105 - a placeholder by design
_PLACEHOLDER_MARKERS = ("change_me", "changeme", "placeholder", "your-secret", "dev-only")
MIN_SECRET_LENGTH = 32

REDACTED = "********"


# The exit status of every command and server that refuses its configuration.
EXIT_CONFIG = 2


class ConfigError(Exception):
    """Configuration that the service refuses to start with. The message is one line."""


class SmtpSecurity(StrEnum):
    """How the connection to the SMTP relay is protected."""

    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS, refused without it
    TLS = "tls"  # TLS from the first byte (implicit TLS, usually port 465)
    NONE = "none"  # no encryption: a relay on the same host or private network only


class DbSslMode(StrEnum):
    """How the connection to Postgres is protected, as libpq's `sslmode` names it."""

    DISABLE = "disable"  # never TLS
    PREFER = "prefer"  # TLS when the server offers it, unverified (the driver's default)
    REQUIRE = "require"  # always TLS, the certificate not verified
    VERIFY_CA = "verify-ca"  # always TLS, the certificate signed by DB_SSL_ROOT_CERT's CA
    VERIFY_FULL = "verify-full"  # verify-ca, and the certificate names the host


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


def _secret(description: str, default: str | None = None) -> Any:
    return Field(default=default, description=description, json_schema_extra={"secret": True})


def _package_version() -> str:
    try:
        return metadata.version("shipshape")
    except metadata.PackageNotFoundError:  # a source tree that is not installed: the dev stack's
        return _source_version() or "0.0.0+unknown"


def _source_version(root: Path = Path(__file__).resolve().parents[2]) -> str | None:
    """The version in the source tree's pyproject.toml, when the app runs from one."""
    try:
        version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    return version if isinstance(version, str) else None


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads `X_FILE` for every secret field `X` (Docker/Swarm secrets)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            env_name = name.upper()
            file_var = f"{env_name}_FILE"
            path = os.environ.get(file_var)
            if not path:
                continue
            if os.environ.get(env_name):
                raise ConfigError(f"both {env_name} and {file_var} are set; set only one")
            try:
                values[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{file_var}={path} cannot be read: {exc.strerror or exc}"
                ) from None
        return values


def is_secret(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


def _volume_entries(value: str) -> list[tuple[str, str, str]]:
    """MONITORED_VOLUMES's entries, each partitioned at its "=", blank ones skipped."""
    return [part.strip().partition("=") for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        env_file=None,  # compose's env_file (or the shell) delivers the environment
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
    )

    # --- Application -------------------------------------------------------------------
    app_name: str = Field("Shipshape", description="Service name, shown in logs and /health.")
    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="development, test, staging or production. Staging and production "
        "refuse placeholder secrets.",
    )
    debug: bool = Field(
        False,
        description="Name the exception type in 500 responses (development aid). "
        "Refused in staging/production.",
    )
    log_level: str = Field("info", description="debug, info, warning, error or critical.")
    otel_enabled: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry instrumentation (needs an OpenTelemetry SDK "
        "and exporter configured). Off: /metrics and the JSON logs cover it, and it adds a check "
        "to every request.",
    )
    access_log_probes: bool = Field(
        False,
        description="Access-log successful /live, /ready and /health requests too. Off: health "
        "checks every few seconds are noise; a failed probe is always logged.",
    )
    host: str = Field("127.0.0.1", description="Address `python -m app serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m app serve` binds to.")

    # --- URLs ----------------------------------------------------------------------------
    base_url: str = Field(
        "http://localhost:8000", description="Public base URL of the service (links, redirects)."
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed by CORS (empty: CORS middleware off).",
    )
    webui_base_url: str = Field(
        "",
        description="Public URL of the web UI; the app serves it at this URL's path. Empty: "
        "BASE_URL + /ui.",
    )
    ui_static_dir: str = Field(
        "",
        description="Where the `prod` start copies the web UI's fingerprinted static files for "
        "nginx to serve (a volume shared with it). Empty: the app serves them itself.",
    )

    # --- Database ------------------------------------------------------------------------
    database_url: str = _secret(
        "Full SQLAlchemy URL; wins over DB_*. Empty and no DB_HOST: embedded SQLite "
        f"`{SQLITE_DEFAULT_URL}`.",
        default="",
    )
    db_host: str = Field("", description="Postgres host; when set, the URL is built from DB_*.")
    db_port: int = Field(5432, ge=1, le=65535, description="Postgres port.")
    db_user: str = Field("postgres", description="Postgres user.")
    db_password: str = _secret("Postgres password.", default="")
    db_name: str = Field("shipshape", description="Postgres database name.")
    db_pool_size: int = Field(
        10,
        ge=1,
        le=100,
        description="Connections kept per process (keep processes x this under the server's "
        "max_connections).",
    )
    db_max_overflow: int = Field(
        0,
        ge=0,
        le=100,
        description="Extra connections under load, closed again on return; 0 makes requests "
        "wait for a pooled one instead of paying a new connection each.",
    )
    db_sslmode: DbSslMode = Field(
        DbSslMode.PREFER,
        description="TLS to Postgres, as libpq's sslmode: disable, prefer, require, verify-ca "
        "or verify-full (a managed database: verify-full with its CA in DB_SSL_ROOT_CERT).",
    )
    db_ssl_root_cert: str = Field(
        "",
        description="CA bundle (PEM) Postgres's certificate is verified against under "
        "verify-ca and verify-full; empty: the system's.",
    )
    db_echo: bool = Field(False, description="Log every SQL statement (development only).")
    db_connect_timeout_seconds: float = Field(
        3.0,
        gt=0,
        le=60,
        description="Postgres connect timeout; a request that cannot connect gets 503 by then.",
    )
    db_statement_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Longest one Postgres statement of a request may take (Postgres's "
        "statement_timeout, and the driver's own bound 1 s later for a server that does not "
        "answer): the request gets 503 by then.",
    )
    job_statement_timeout_seconds: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="The same bound for the worker and the CLI: one batch of an import, "
        "export or retention sweep. Migrations have none.",
    )

    # --- Redis ---------------------------------------------------------------------------
    redis_url: str = _secret(
        "Full Redis URL; wins over REDIS_*. Empty and no REDIS_HOST: no Redis "
        "(in-process defaults).",
        default="",
    )
    redis_host: str = Field("", description="Redis host; when set, the URL is built from REDIS_*.")
    redis_port: int = Field(6379, ge=1, le=65535, description="Redis port.")
    redis_password: str = _secret("Redis password.", default="")
    redis_db: int = Field(0, ge=0, le=15, description="Redis database number for the cache.")
    redis_tls: bool = Field(
        False,
        description="TLS to the REDIS_* server (rediss://), its certificate and host name "
        "verified. A full REDIS_URL says rediss:// itself.",
    )
    redis_ca_file: str = Field(
        "",
        description="CA bundle (PEM) Redis's certificate is verified against with "
        "REDIS_TLS; empty: the system's.",
    )

    # --- Background jobs (Celery) and cache ---------------------------------------------
    celery_broker_url: str = _secret(
        "Celery broker. Empty: Redis database 1 when Redis is configured, else jobs run "
        "in-process (eager).",
        default="",
    )
    celery_result_backend: str = _secret(
        "Celery result backend. Empty: Redis database 2 when Redis is configured.", default=""
    )
    task_time_limit: int = Field(
        300, ge=5, le=86400, description="Seconds a job may run before its worker kills it."
    )
    visibility_timeout: int = Field(
        3600,
        ge=1,
        le=86400,
        description="Seconds before an unacknowledged job is redelivered; above TASK_TIME_LIMIT.",
    )
    job_max_deliveries: int = Field(
        3,
        ge=1,
        le=100,
        description="Times a job is started before it is failed: a job that keeps killing its "
        "worker (out of memory, say) ends as `failed` instead of being redelivered for ever.",
    )
    job_heartbeat_seconds: float = Field(
        10.0,
        ge=0.5,
        le=3600,
        description="How often a running job shows it is alive; a job whose worker died is "
        "handed on (or failed) within twice this.",
    )
    job_resend_after_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="A job `queued` this long is sent to the broker again (the database row "
        "is the truth; a lost message, after an evicted or flushed Redis, cannot lose the "
        "job). A duplicate does nothing: a job runs once.",
    )
    worker_concurrency: int = Field(2, ge=1, le=64, description="Worker processes per worker.")
    worker_max_tasks_per_child: int = Field(
        100, ge=1, description="Recycle a worker process after this many jobs."
    )
    worker_metrics_port: int = Field(
        9808,
        ge=0,
        le=65535,
        description="Port of the worker's /metrics (task runs and durations, jobs ended), on "
        "HOST, with the access rules of the app's /metrics. 0: not served.",
    )
    job_retention_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="Days a finished job (and its export or upload file) is kept; then a "
        "sweep in the worker deletes it. `DELETE /api/v1/jobs/{id}` deletes one sooner.",
    )
    uploads_dir: str = Field("./uploads", description="Where uploaded import files are kept.")
    storage_dir: str = Field("./storage", description="Where export files are written.")
    max_request_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1_000_000_000,
        description="Largest request body accepted (413 above), checked before it is read; "
        "the import upload has IMPORT_MAX_BYTES instead.",
    )
    import_max_bytes: int = Field(
        5_000_000, ge=1, le=1_000_000_000, description="Largest CSV upload accepted (413 above)."
    )
    import_max_rows: int = Field(
        1_000_000,
        ge=1,
        le=10_000_000,
        description="Most rows one CSV import may have; a larger file fails its job with a "
        "message saying so.",
    )
    webhook_secret: str = _secret(
        "Key that signs webhook events (HMAC-SHA256). Default: SECRET_KEY.", default=""
    )
    webhook_allowed_hosts: str = Field(
        "", description="Comma-separated hosts callback URLs may point at (empty: any host)."
    )
    webhook_allow_private_targets: bool = Field(
        False,
        description="Let callback URLs reach loopback, private, link-local and reserved "
        "addresses (development only: a user could make the server call internal services).",
    )
    webhook_max_attempts: int = Field(
        5, ge=1, le=20, description="Delivery attempts before a webhook is given up."
    )
    webhook_backoff_seconds: float = Field(
        2.0, ge=0, le=3600, description="First retry delay; doubles after each failed attempt."
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Timeout of one webhook delivery attempt."
    )
    cache_ttl_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description="Lifetime of the reads cached in Redis: items, pages, who a user is "
        "(0 = none).",
    )
    local_cache_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Each process also keeps the first pages and who a user is in its memory, "
        "for at most this long, dropped by Redis's invalidations the moment anyone changes "
        "them (server-assisted client-side caching; off while that connection is down). "
        "0: every read asks Redis.",
    )
    local_cache_entries: int = Field(
        1024, ge=1, le=1_000_000, description="Entries the memory cache of a process holds."
    )
    local_cache_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Bytes of values the memory cache of a process holds.",
    )

    # --- Security ------------------------------------------------------------------------
    secret_key: str = _secret(
        "Application secret. Required in staging/production, at least 32 characters.",
        default="",
    )
    jwt_secret_key: str = _secret(
        "Key that signs access tokens. Required in staging/production, at least 32 characters.",
        default="",
    )
    jwt_algorithm: str = Field("HS256", description="JWT signing algorithm (HS256/HS384/HS512).")
    access_token_expire_minutes: int = Field(
        60, ge=1, le=60 * 24 * 30, description="Lifetime of an access token."
    )
    ui_session_minutes: int = Field(
        480,
        ge=5,
        le=60 * 24 * 7,
        description="Lifetime of a web UI sign-in (its session cookie); signing out ends it at "
        "once.",
    )

    password_hash_memory_kib: int = Field(
        19 * 1024,
        ge=8,
        le=1024 * 1024,
        description="argon2id memory cost per hash (KiB; OWASP's baseline 19 MiB). Each login "
        "holds this much while it is checked.",
    )
    password_hash_time_cost: int = Field(2, ge=1, le=20, description="argon2id passes.")
    password_hash_concurrency: int = Field(
        0,
        ge=0,
        le=64,
        description="Passwords hashed at once per process; more wait up to a second, then "
        "get 503. 0: from the memory limit (a quarter of it shared by MAX_WORKERS processes; "
        "1 to 4).",
    )
    login_failures_per_account: str = Field(
        "5/minute,20/hour,100/day",
        description="Failed logins allowed per account and client address before 429 "
        "(`limits` notation); the real user elsewhere is not locked out.",
    )
    login_failures_per_client: str = Field(
        "30/minute,300/hour",
        description="Failed logins allowed per client address, over all accounts, before 429; "
        "a browser or client that signed in before from that address keeps logging in.",
    )
    password_reset_minutes: int = Field(
        30, ge=5, le=24 * 60, description="Lifetime of a password reset link sent by e-mail."
    )
    password_reset_requests_per_address: str = Field(
        "3/hour,10/day",
        description="Password reset e-mails sent per e-mail address (`limits` notation); more "
        "requests get the same answer and no e-mail.",
    )
    password_reset_requests_per_client: str = Field(
        "10/hour",
        description="Password reset requests accepted per client address before 429.",
    )

    # --- E-mail (password resets) ---------------------------------------------------------
    smtp_host: str = Field(
        "",
        description="SMTP relay that sends the service's e-mail. Empty: e-mails are written "
        "to the log instead (development).",
    )
    smtp_port: int = Field(587, ge=1, le=65535, description="The SMTP relay's port.")
    smtp_security: SmtpSecurity = Field(
        SmtpSecurity.STARTTLS,
        description="starttls (refused by a relay that does not offer it), tls (implicit "
        "TLS, usually port 465) or none (a relay on a private network only).",
    )
    smtp_username: str = Field("", description="SMTP user name; empty: no authentication.")
    smtp_password: str = _secret("SMTP password (or SMTP_PASSWORD_FILE).", default="")
    smtp_from: str = Field(
        "noreply@example.com",
        description="The From: of the service's e-mail (an address, or `Name <address>`).",
    )
    smtp_ca_file: str = Field(
        "",
        description="CA bundle (PEM) the relay's certificate is verified against; empty: the "
        "system's. The host name is always verified.",
    )
    smtp_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Timeout of each SMTP connection and command."
    )
    mail_max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts to send an e-mail before it is given up."
    )

    # --- First superuser -----------------------------------------------------------------
    admin_username: str = Field(
        "admin", description="Superuser created by `create-superuser` and CREATE_SUPERUSER."
    )
    admin_email: Email = Field("admin@example.com", description="The superuser's e-mail.")
    admin_password: str = _secret(
        "The superuser's password. Required in staging/production to create the superuser.",
        default="",
    )

    # --- Server process (gunicorn_config.py) and container entrypoint ----------------------
    web_concurrency: int = Field(
        0, ge=0, le=64, description="gunicorn workers; 0 = 2 x CPUs + 1, capped by MAX_WORKERS."
    )
    max_workers: int = Field(8, ge=1, le=64, description="Cap on the automatic worker count.")
    worker_timeout: int = Field(
        30, ge=1, le=3600, description="Seconds a worker may stay silent before it is restarted."
    )
    graceful_timeout: int = Field(
        20, ge=1, le=3600, description="Seconds in-flight requests get to finish on SIGTERM."
    )
    keepalive: int = Field(
        75, ge=1, le=3600, description="Idle keep-alive seconds; above nginx's upstream timeout."
    )
    max_requests: int = Field(
        0,
        ge=0,
        description="Recycle a worker after this many requests (0 = never, the default: "
        "WORKER_MAX_MEMORY_MB bounds growth instead); a recycle closes its keep-alive "
        "connections, and the only worker's recycle leaves nobody serving for a moment.",
    )
    max_requests_jitter: int = Field(
        0, ge=0, description="Random spread on MAX_REQUESTS so workers do not recycle at once."
    )
    worker_max_memory_mb: int = Field(
        200,
        ge=0,
        description="Restart a worker, gracefully, once its own memory (private, not the "
        "pages it shares with the master) passes this many MB; checked every "
        "WORKER_TIMEOUT/2 seconds (0 = never).",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Proxies whose X-Forwarded-* headers are trusted (comma-separated "
        "addresses; `*` behind nginx only). Empty: nobody's; the client address is the "
        "connection's.",
    )
    run_migrations: bool = Field(
        False, description="Entrypoint: migrate to head before serving (advisory-locked)."
    )
    create_superuser: bool = Field(
        False, description="Entrypoint: create the ADMIN_* superuser before serving."
    )
    db_wait_timeout: int = Field(
        60,
        ge=0,
        le=3600,
        description="Entrypoint: seconds to wait for the database at start. A server that "
        "refuses the password, user or database name ends the wait at once (exit 2).",
    )

    # --- Operations ----------------------------------------------------------------------
    ready_timeout_seconds: float = Field(
        2.0, gt=0, le=30, description="Timeout of each /ready and /health dependency check."
    )
    metrics_token: str = _secret(
        "Bearer token that opens /metrics and the detailed /health report (Prometheus: "
        "`authorization: {credentials: ...}`). Empty: only METRICS_ALLOWED_NETWORKS.",
        default="",
    )
    metrics_allowed_networks: str = Field(
        "127.0.0.1/32,::1/128",
        description="Comma-separated networks (CIDR) whose clients get /metrics and the "
        "detailed /health without the token. Everyone else gets 401 and a plain status.",
    )
    monitored_volumes: str = Field(
        "",
        description="More folders whose volume's size and free space /metrics reports, as "
        "`name=/path,...` (the uploads and exports folders are always reported). The "
        "monitoring overlay adds the database's and the backups' volumes, mounted read-only.",
    )
    backup_dir: str = Field(
        "",
        description="The backups folder (scripts/backup.sh's BACKUP_DIR, mounted read-only): "
        "/metrics reports when its newest daily dump was made, and its size. Empty: none.",
    )
    tls_probe_address: str = Field(
        "",
        description="`host:port` of the TLS server whose certificate's expiry /metrics "
        "reports (the monitoring overlay: nginx:443), asked for BASE_URL's host. Empty: none.",
    )
    items_max_page_size: int = Field(
        100, ge=1, le=1000, description="Hard maximum of `limit` on list endpoints."
    )
    build_version: str = Field(
        "", description="Version stamped by the image build. Default: the package version."
    )
    git_commit: str = Field("unknown", description="Commit stamped by the image build.")

    # ------------------------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)  # noqa: S101 - a typing guard
        # X_FILE before X: an env file that lists X empty (the production examples do, the
        # value being a file) must not hide the file. Both set is refused by the source.
        return (init_settings, FileSecretsSource(settings_cls), env_settings)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("must be one of debug, info, warning, error, critical")
        return value

    @field_validator("jwt_algorithm")
    @classmethod
    def _jwt_algorithm(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in {"HS256", "HS384", "HS512"}:
            raise ValueError("must be HS256, HS384 or HS512")
        return value

    @field_validator(
        "login_failures_per_account",
        "login_failures_per_client",
        "password_reset_requests_per_address",
        "password_reset_requests_per_client",
    )
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                "must be rate limits like `5/minute,20/hour` (limits notation)"
            ) from None
        return value

    @field_validator("monitored_volumes")
    @classmethod
    def _check_monitored_volumes(cls, v: str) -> str:
        for entry in _volume_entries(v):
            name, _, path = entry
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", name) or not path.startswith("/"):
                raise ValueError(
                    f"{''.join(entry)[:60]!r}: each entry is name=/absolute/path, the name in "
                    "lower case"
                )
        return v

    @field_validator("tls_probe_address")
    @classmethod
    def _check_tls_probe_address(cls, v: str) -> str:
        if v:
            host, _, port = v.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{v[:60]!r} is not host:port")
        return v

    @field_validator("metrics_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for network in value.split(","):
            if network.strip():
                try:
                    ipaddress.ip_network(network.strip())
                except ValueError:
                    raise ValueError(f"{network.strip()!r} is not a network (CIDR)") from None
        return value

    @field_validator("base_url", "webui_base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        if self.visibility_timeout <= self.task_time_limit:
            raise ConfigError(
                "VISIBILITY_TIMEOUT must be above TASK_TIME_LIMIT, or running jobs are "
                "delivered twice"
            )
        taken = ("/api", "/docs", "/live", "/ready", "/health", "/metrics", "/openapi.json")
        if any(self.ui_path == path or self.ui_path.startswith(path + "/") for path in taken):
            raise ConfigError(
                f"WEBUI_BASE_URL's path {self.ui_path} is one the service already answers: "
                "use another, e.g. /ui"
            )
        self._check_ca_files()
        if self.is_strict:
            self._refuse_weak_secrets()
        else:
            if not self.secret_key:
                # A key written in the source would let anyone sign a token for a known user
                # id of any `make run`: development gets a random key per data directory.
                test = self.environment is Environment.TEST
                self.secret_key = DEV_SECRET_KEY if test else development_key(self.data_dir)
            self.jwt_secret_key = self.jwt_secret_key or self.secret_key
            self.admin_password = self.admin_password or DEV_ADMIN_PASSWORD
        return self

    def _check_ca_files(self) -> None:
        """A CA bundle that is named is readable PEM: refused at start, not at the first
        connection (where it would read as the database or Redis being down)."""
        named = {"DB_SSL_ROOT_CERT": self.db_ssl_root_cert, "REDIS_CA_FILE": self.redis_ca_file}
        for var, path in named.items():
            if not path:
                continue
            try:
                ssl.create_default_context(cafile=path)
            except ssl.SSLError:  # an OSError too: before it
                raise ConfigError(f"{var}={path} holds no PEM certificate") from None
            except OSError as exc:
                raise ConfigError(f"{var}={path} cannot be read: {exc.strerror or exc}") from None

    def _refuse_weak_secrets(self) -> None:
        if self.debug:
            raise ConfigError(
                f"DEBUG=true is refused in {self.environment}: it leaks error details"
            )
        required = {"secret_key": self.secret_key, "jwt_secret_key": self.jwt_secret_key}
        for name, value in required.items():
            var = name.upper()
            if not value:
                raise ConfigError(
                    f"{var} is required in {self.environment}: set {var} or {var}_FILE"
                )
            if len(value) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"{var} is too short for {self.environment}: "
                    f"use at least {MIN_SECRET_LENGTH} random characters"
                )
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if is_secret(field) and isinstance(value, str) and looks_like_placeholder(value):
                raise ConfigError(
                    f"{name.upper()} holds a placeholder value; {self.environment} refuses it: "
                    "set a real secret"
                )

    # --- derived values ----------------------------------------------------------------
    @property
    def is_strict(self) -> bool:
        return self.environment in (Environment.STAGING, Environment.PRODUCTION)

    @property
    def version(self) -> str:
        return self.build_version or _package_version()

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL: DATABASE_URL, else DB_* parts, else embedded SQLite."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        if self.db_host:
            user = quote(self.db_user, safe="")
            password = quote(self.db_password, safe="")
            auth = f"{user}:{password}" if password else user
            return f"postgresql+asyncpg://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"
        return SQLITE_DEFAULT_URL

    @property
    def data_dir(self) -> Path:
        """Where the service keeps its local state: the SQLite database's folder, or (with
        a database server) the storage folder."""
        url = self.sqlalchemy_url
        if url.startswith("sqlite") and ":///" in url:
            path = url.split(":///", 1)[1].split("?", 1)[0]
            if path and path != ":memory:":
                return Path(path).parent
        return Path(self.storage_dir)

    @property
    def ui_path(self) -> str:
        """The path the web UI is served under (no trailing slash)."""
        return urlsplit(self.webui_base_url or f"{self.base_url}/ui").path.rstrip("/") or "/ui"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def resolved_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if self.redis_host:
            auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
            where = f"{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"
            if not self.redis_tls:
                return f"redis://{where}"
            # Understood alike by redis-py, Celery's broker and result backend and `limits`.
            verify = {"ssl_cert_reqs": "required", "ssl_check_hostname": "true"}
            if self.redis_ca_file:
                verify["ssl_ca_certs"] = self.redis_ca_file
            return f"rediss://{where}?{urlencode(verify)}"
        return None

    def _redis_db_url(self, db: int) -> str | None:
        base = self.resolved_redis_url
        if base is None:
            return None
        parts = urlsplit(base)
        return urlunsplit(parts._replace(path=f"/{db}"))

    @property
    def resolved_broker_url(self) -> str | None:
        """Celery broker, or None: no broker, jobs run in-process."""
        return self.celery_broker_url or self._redis_db_url(1)

    @property
    def resolved_result_backend(self) -> str | None:
        return self.celery_result_backend or self._redis_db_url(2)

    @property
    def jobs_run_in_process(self) -> bool:
        return self.resolved_broker_url is None

    @property
    def webhook_key(self) -> bytes:
        return (self.webhook_secret or self.secret_key).encode()

    @property
    def webhook_allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip()]

    @property
    def hash_concurrency(self) -> int:
        """PASSWORD_HASH_CONCURRENCY, or what the memory limit allows when it is 0."""
        if self.password_hash_concurrency:
            return self.password_hash_concurrency
        limit = resources.memory_limit_bytes()
        if limit is None:
            return 4
        processes = self.web_concurrency or self.max_workers
        per_hash = self.password_hash_memory_kib * 1024
        return max(1, min(4, limit // 4 // (per_hash * processes)))

    @property
    def monitored_volume_paths(self) -> dict[str, str]:
        """Volume name -> a folder on it: uploads, exports, then MONITORED_VOLUMES."""
        volumes = {"uploads": self.uploads_dir, "exports": self.storage_dir}
        return volumes | {name: path for name, _, path in _volume_entries(self.monitored_volumes)}

    @property
    def metrics_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(n.strip()) for n in self.metrics_allowed_networks.split(",")
            if n.strip()
        ]  # fmt: skip

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def redacted(self) -> dict[str, Any]:
        """The resolved configuration with every secret masked: safe to log."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if is_secret(field) and not name.endswith(("_url", "_backend")):
                value = REDACTED if value else ""
            out[name.upper()] = value.value if isinstance(value, StrEnum) else value
        out["DATABASE_URL"] = redact_url(self.sqlalchemy_url)
        out["REDIS_URL"] = redact_url(self.resolved_redis_url or "")
        out["CELERY_BROKER_URL"] = redact_url(self.resolved_broker_url or "") or "(in-process)"
        out["CELERY_RESULT_BACKEND"] = redact_url(self.resolved_result_backend or "")
        out["VERSION"] = self.version
        return out


def development_key(folder: Path) -> str:
    """The key in `folder`/secret_key, created on first use: random, readable by its owner
    only. Processes starting at once agree on one key: each writes a file of its own and
    links it into place, and the first link wins."""
    path = folder / GENERATED_KEY_FILE
    try:
        if key := path.read_text(encoding="utf-8").strip():
            return key
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(
            f"the generated SECRET_KEY in {path} cannot be read: {exc.strerror or exc}; "
            "set SECRET_KEY or SECRET_KEY_FILE"
        ) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        draft = folder / f".{GENERATED_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        handle = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(handle, (secrets.token_urlsafe(48) + "\n").encode())
        finally:
            os.close(handle)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: its key it is
        finally:
            draft.unlink(missing_ok=True)
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot keep a generated SECRET_KEY in {folder}: {exc.strerror or exc}; "
            "set SECRET_KEY or SECRET_KEY_FILE"
        ) from None


def looks_like_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in _PLACEHOLDER_MARKERS)


def normalise_database_url(url: str) -> str:
    """Accept the URL forms compose files and hosting providers hand out."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError("DATABASE_URL is not a URL (expected scheme://...)")
    scheme = scheme.lower()
    if scheme in {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}:
        scheme = "postgresql+asyncpg"
    elif scheme == "sqlite":
        scheme = "sqlite+aiosqlite"
    if scheme not in {"postgresql+asyncpg", "sqlite+aiosqlite"}:
        raise ConfigError(
            f"DATABASE_URL scheme {scheme!r} is not supported: use postgresql:// or sqlite://"
        )
    return f"{scheme}://{rest}"


def redact_url(url: str) -> str:
    """Mask the password of a URL, keep the rest readable."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{netloc}"))


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning every problem into a one-line ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        var = ".".join(str(p) for p in first["loc"]).upper() or "configuration"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{var}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
