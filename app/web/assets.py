"""Static files of the web UI and of the API docs, under fingerprinted names.

Each file is served as `<stem>.<first 12 hex digits of its SHA-256>.<suffix>`, so a name
never changes meaning and browsers may keep it for a year (`immutable`); a changed file gets
a new name, and the pages link the new one. The app serves them itself (`make run`); the
production start copies them into a volume that nginx serves them from (`collect`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import cast

from starlette.requests import Request

STATIC_DIR = Path(__file__).parent / "static"
# Swagger UI's own files, from the fastapi-swagger package (it follows swagger-ui-dist's
# releases): the docs page loads them from this site, never from a CDN.
SWAGGER_DIR = Path(str(resources.files("fastapi_swagger") / "resources"))
SOURCES = {
    "style.css": STATIC_DIR / "style.css",
    "app.js": STATIC_DIR / "app.js",
    "docs.js": STATIC_DIR / "docs.js",
    "swagger-ui.css": SWAGGER_DIR / "swagger-ui.css",
    "swagger-ui-bundle.js": SWAGGER_DIR / "swagger-ui-bundle.js",
}
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
CACHE_FOREVER = "public, max-age=31536000, immutable"
HASH_CHARS = 12


def fingerprinted(name: str, content: bytes) -> str:
    stem, dot, suffix = name.rpartition(".")
    digest = hashlib.sha256(content).hexdigest()[:HASH_CHARS]
    return f"{stem}.{digest}{dot}{suffix}"


@dataclass(frozen=True)
class Asset:
    name: str  # fingerprinted
    path: Path
    media_type: str


class Assets:
    """The fingerprinted names of the static files, computed once at start."""

    def __init__(self, sources: dict[str, Path] | None = None) -> None:
        self.by_source: dict[str, Asset] = {}
        self.by_name: dict[str, Asset] = {}
        for source, path in (sources or SOURCES).items():
            asset = Asset(
                name=fingerprinted(source, path.read_bytes()),
                path=path,
                media_type=MEDIA_TYPES[path.suffix],
            )
            self.by_source[source] = asset
            self.by_name[asset.name] = asset

    def name(self, source: str) -> str:
        return self.by_source[source].name

    def collect(self, target: Path) -> int:
        """Copy every file under its fingerprinted name into `target`; returns how many were
        new. Files already there are kept (pages of the previous release, still open in
        browsers during a rolling update, link them); each write is atomic."""
        target.mkdir(parents=True, exist_ok=True)
        written = 0
        for asset in self.by_name.values():
            destination = target / asset.name
            if destination.exists():
                continue
            handle, temporary = tempfile.mkstemp(dir=target, prefix=".collect-")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(asset.path.read_bytes())
                os.chmod(temporary, 0o644)
                os.replace(temporary, destination)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            written += 1
        return written


def app_assets(request: Request) -> Assets:
    """The files create_app fingerprinted (`app.state.assets`), typed as the API's state is
    (app/api/deps.py, `app_state`)."""
    return cast("Assets", request.app.state.assets)
