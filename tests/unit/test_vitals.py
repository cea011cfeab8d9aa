"""What /metrics reports for the alerts on volumes, backups and the served certificate
(app/services/vitals.py, app/core/certificates.py)."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from app.core.certificates import not_after
from app.core.config import ConfigError, Settings
from app.main import create_app
from app.services import vitals
from tests.helpers import make_settings

TOKEN = "m" * 32


def _certificate(expires: datetime, folder: Path) -> tuple[bytes, Path, Path]:
    """A self-signed certificate valid until `expires`: its DER, PEM file and key file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC)).not_valid_after(expires)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem, private = folder / "cert.pem", folder / "key.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.DER), pem, private


@pytest.mark.parametrize(
    "expires",
    [
        datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC),  # UTCTime
        datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # UTCTime's last year
        datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC),  # GeneralizedTime from 2050 on
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # "no well-defined expiration"
    ],
)
def test_the_expiry_is_read_from_the_certificate(expires: datetime, tmp_path: Path) -> None:
    der, _, _ = _certificate(expires, tmp_path)
    assert not_after(der) == expires


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x05\x30\x03\x02\x01\x01",
        b"\x31\x00",
        b"\x30\x85\xff\xff\xff\xff\xff",
        b"\x30\x02\x30\x00",  # an empty tbsCertificate: nothing where the version may be
    ],
)
def test_what_is_no_certificate_is_refused(der: bytes) -> None:
    with pytest.raises(ValueError, match=r"certificate|tag|time"):
        not_after(der)


def test_a_truncated_certificate_is_refused(tmp_path: Path) -> None:
    der, _, _ = _certificate(datetime(2030, 1, 1, tzinfo=UTC), tmp_path)
    for cut in (10, len(der) // 3, len(der) - 1):
        with pytest.raises(ValueError, match="truncated"):
            not_after(der[:cut])


def test_volumes_report_their_size_and_free_space(tmp_path: Path) -> None:
    used = vitals.volume_use({"here": str(tmp_path), "gone": str(tmp_path / "missing")})
    assert set(used) == {"here"}
    stats = os.statvfs(tmp_path)
    assert used["here"].size_bytes == stats.f_blocks * stats.f_frsize
    assert 0 < used["here"].available_bytes <= used["here"].size_bytes


def test_the_newest_whole_daily_backup_counts(tmp_path: Path) -> None:
    assert vitals.newest_backup(str(tmp_path)) is None  # no daily/ yet
    daily = tmp_path / "daily"
    daily.mkdir()
    assert vitals.newest_backup(str(tmp_path)) is None
    for name, size, at in [
        ("shipshape-20261204T023000Z.dump", 100, 1_000),
        ("shipshape-20261205T023000Z.dump", 250, 2_000),
        ("shipshape-20261205T023000Z.dump.sha256", 80, 2_100),  # a checksum, not a backup
        (".shipshape-20261206T023000Z.dump.tmp", 999, 3_000),  # still being written
    ]:
        (daily / name).write_bytes(b"x" * size)
        os.utime(daily / name, (at, at))
    (daily / "weekly.dump").mkdir()  # a folder named like a dump is none
    os.utime(daily / "weekly.dump", (5_000, 5_000))
    assert vitals.newest_backup(str(tmp_path)) == vitals.Backup(2_000.0, 250)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, datetime]]:
    """A TLS server on 127.0.0.1 serving a self-signed certificate; (port, its expiry)."""
    expires = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    _, pem, key = _certificate(expires, tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem, key)
    loop = asyncio.new_event_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0, ssl=context))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port, expires
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.close()


def test_the_served_certificate_expiry_is_read_unverified(
    tls_server: tuple[int, datetime],
) -> None:
    port, expires = tls_server
    # "Eventually": a busy machine may be slow to shake hands.
    found = asyncio.run(vitals.served_certificate_expiry(f"127.0.0.1:{port}", "example.test", 60))
    assert found == expires.timestamp()


def test_no_tls_server_means_no_expiry(tmp_path: Path) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # never answers the handshake: the timeout ends it
        writer.close()

    async def probe() -> tuple[float | None, float | None]:
        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        silent = await vitals.served_certificate_expiry(f"127.0.0.1:{port}", "x", 0.5)
        server.close()
        closed = await vitals.served_certificate_expiry(f"127.0.0.1:{port}", "x", 60)
        return silent, closed

    assert asyncio.run(probe()) == (None, None)


def test_metrics_report_volumes_backup_and_certificate(
    settings: Settings, tmp_path: Path, tls_server: tuple[int, datetime]
) -> None:
    port, expires = tls_server
    backups = tmp_path / "backups"
    (backups / "daily").mkdir(parents=True)
    for folder in ("uploads", "storage"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (backups / "daily" / "shipshape-20261206T023000Z.dump").write_bytes(b"d" * 4096)
    os.utime(backups / "daily" / "shipshape-20261206T023000Z.dump", (1_796_000_000,) * 2)
    operator = make_settings(
        tmp_path, settings.database_url, metrics_token=TOKEN, backup_dir=str(backups),
        monitored_volumes=f"backups={backups}", tls_probe_address=f"127.0.0.1:{port}",
        base_url="https://example.test",
        ready_timeout_seconds=30,  # the probe's bound: the handshake may be slow on a busy machine
    )  # fmt: skip
    with TestClient(create_app(operator)) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}  # fmt: skip
    assert values["backup_last_success_timestamp_seconds"] == 1_796_000_000
    assert values["backup_size_bytes"] == 4096
    assert values["certificate_expiry_timestamp_seconds"] == expires.timestamp()
    for volume in ("uploads", "exports", "backups"):
        assert values[f'volume_size_bytes{{volume="{volume}"}}'] > 0, volume
        assert values[f'volume_available_bytes{{volume="{volume}"}}'] > 0, volume


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("monitored_volumes", "postgres=relative/path", "name=/absolute/path"),
        ("monitored_volumes", "Postgres=/volumes/postgres", "name=/absolute/path"),
        ("monitored_volumes", "/volumes/postgres", "name=/absolute/path"),
        ("tls_probe_address", "nginx", "is not host:port"),
        ("tls_probe_address", "nginx:https", "is not host:port"),
        ("tls_probe_address", ":443", "is not host:port"),
        ("tls_probe_address", "nginx:70000", "is not host:port"),
    ],
)
def test_a_wrong_monitoring_setting_is_refused(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_settings(tmp_path, "sqlite+aiosqlite://", **{name: value})


def test_monitored_volumes_add_to_the_files_folders(tmp_path: Path) -> None:
    configured = make_settings(
        tmp_path, "sqlite+aiosqlite://",
        monitored_volumes=" postgres=/volumes/postgres, ,backups=/backups",
    )  # fmt: skip
    assert configured.monitored_volume_paths == {
        "uploads": str(tmp_path / "uploads"), "exports": str(tmp_path / "storage"),
        "postgres": "/volumes/postgres", "backups": "/backups",
    }  # fmt: skip
