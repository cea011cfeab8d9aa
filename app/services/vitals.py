"""What the operators' alerts read besides the service's own state: how full the volumes
are, when the newest backup was made, when the certificate nginx serves expires. Read at
scrape time by /metrics, each with a bound on its cost (a statvfs per volume, one folder
listing, one TLS handshake with a timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from app.core.certificates import not_after


@dataclass(frozen=True)
class VolumeUse:
    size_bytes: int
    available_bytes: int  # to an unprivileged user, as the services write


def volume_use(volumes: dict[str, str]) -> dict[str, VolumeUse]:
    """Each mounted volume's size and free space; one that is not there is left out."""
    found = {}
    for name, path in volumes.items():
        try:
            stats = os.statvfs(path)
        except OSError:
            continue
        found[name] = VolumeUse(stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize)
    return found


@dataclass(frozen=True)
class Backup:
    finished_at: float  # seconds since the epoch: when its file got its final name
    size_bytes: int


def newest_backup(folder: str) -> Backup | None:
    """The newest daily dump (scripts/backup.sh renames a dump into daily/ once pg_dump and
    its checksum succeeded, so every file there is a whole backup)."""
    newest: Backup | None = None
    try:
        with os.scandir(Path(folder) / "daily") as entries:
            for entry in entries:
                if not entry.name.endswith(".dump") or not entry.is_file(follow_symlinks=False):
                    continue
                stats = entry.stat(follow_symlinks=False)
                if newest is None or stats.st_mtime > newest.finished_at:
                    newest = Backup(stats.st_mtime, stats.st_size)
    except OSError:
        return None
    return newest


async def served_certificate_expiry(
    address: str, server_name: str, within_seconds: float
) -> float | None:
    """When the certificate served at `address` (host:port) for `server_name` expires, in
    seconds since the epoch; None when it cannot be read within `within_seconds`. Not verified:
    the date is wanted, self-signed or not."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(within_seconds):
            _, writer = await asyncio.open_connection(
                host, int(port), ssl=context, server_hostname=server_name
            )
    except (OSError, TimeoutError, ValueError, ssl.SSLError):
        return None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        # The date is read whatever the goodbye looks like: a slow or broken one is cut short.
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(within_seconds):
                await writer.wait_closed()
    try:
        return not_after(der).timestamp() if der else None
    except ValueError:
        return None
