"""Background jobs: CSV import and export of items, job status, export download."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import (
    APIRouter,
    BackgroundTasks,
    File,
    Form,
    HTTPException,
    Request,
    UploadFile,
    status,
)
from fastapi.responses import FileResponse

from app.api.deps import CurrentPrincipal, SessionDep, SettingsDep
from app.core.config import Settings
from app.schemas.jobs import ExportRequest, JobPublic
from app.services import jobs as service
from app.services.webhooks import InvalidCallbackUrl, validate_callback_url
from app.worker.dispatch import enqueue

router = APIRouter(prefix="/api/v1", tags=["jobs"])

CHUNK = 64 * 1024


def _callback(url: str | None, settings: Settings) -> str | None:
    if not url:
        return None
    try:
        return validate_callback_url(url, settings)
    except InvalidCallbackUrl as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"type": "value_error", "loc": ["body", "callback_url"], "msg": str(exc)}],
        ) from None


def _enqueue(
    request: Request, background: BackgroundTasks, settings: Settings, job_id: uuid.UUID
) -> None:
    enqueue(background, request.app.state.db, settings, request.app.state.cache, job_id)


@router.post("/items/import", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
async def import_items(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentPrincipal,
    file: Annotated[
        UploadFile, File(description="CSV with a `title` and an optional `description` column")
    ],
    callback_url: Annotated[str | None, Form()] = None,
) -> JobPublic:
    """Upload a CSV; a job validates every row and imports all of them or none."""
    callback = _callback(callback_url, settings)
    content = bytearray()
    while chunk := await file.read(CHUNK):
        content += chunk
        if len(content) > settings.import_max_bytes:
            raise HTTPException(
                status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"the file is larger than IMPORT_MAX_BYTES ({settings.import_max_bytes} B)",
            )
    job = await service.create_job(session, user, "import", callback)
    path = service.upload_path(settings, job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(content))
    _enqueue(request, background, settings, job.id)
    return JobPublic.of(job)


@router.post("/items/export", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
async def export_items(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentPrincipal,
    body: ExportRequest | None = None,
) -> JobPublic:
    """Write the caller's items (all items for a superuser) to a CSV in the storage volume."""
    callback = _callback(body.callback_url if body else None, settings)
    job = await service.create_job(session, user, "export", callback)
    _enqueue(request, background, settings, job.id)
    return JobPublic.of(job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def read_job(job_id: uuid.UUID, session: SessionDep, user: CurrentPrincipal) -> JobPublic:
    """State and progress (rows done / total) of a job, its report, its webhook."""
    return JobPublic.of(await service.get_job(session, user, job_id))


@router.get("/jobs/{job_id}/download", response_class=FileResponse)
async def download_export(
    job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, user: CurrentPrincipal
) -> FileResponse:
    """The CSV of a finished export."""
    job = await service.get_job(session, user, job_id)
    path = service.export_file(settings, job)
    return FileResponse(path, media_type="text/csv", filename=f"items-{job.id}.csv")
