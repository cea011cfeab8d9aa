"""A finished export's file as an HTTP download: the API's `GET /jobs/{id}/download` and the
web UI's download answer it the same way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from fastapi.responses import StreamingResponse

from app.core.config import Settings
from app.db.models import Job
from app.services import jobs as service

DOWNLOAD_CHUNK_BYTES = 64 * 1024


def export_download(settings: Settings, job: Job) -> StreamingResponse:
    """A finished export's file as an attachment (409 while it runs); the web UI's download
    too. Never kept by a cache: it holds a user's data. The file is opened here: a job
    deleted while its file is sent does not cut the download short."""
    handle, size = service.open_export(settings, job)
    return StreamingResponse(
        _chunks(handle),
        media_type="text/csv",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="items-{job.id}.csv"',
            "Cache-Control": "no-store",
        },
    )


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(DOWNLOAD_CHUNK_BYTES):
            yield chunk
