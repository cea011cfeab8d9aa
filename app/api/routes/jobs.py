"""Background jobs: CSV import and export of items, job status, export download."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import (
    APIRouter,
    BackgroundTasks,
    File,
    Form,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.responses import StreamingResponse

from app.api import API_PREFIX
from app.api.deps import (
    CurrentPrincipal,
    CurrentSuperuser,
    CursorQuery,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    app_state,
)
from app.api.errors import error_responses, validation_error
from app.api.exports import export_download
from app.api.pages import LISTING_RESPONSES, link_header
from app.api.routing import Route, register_choice
from app.core.config import Settings
from app.core.states import JobKind
from app.schemas.common import CALLBACK_URL_PATTERN
from app.schemas.jobs import ExportRequest, JobPage, JobPublic
from app.services import jobs as service
from app.services.jobs import JobAction
from app.services.webhooks import InvalidCallbackUrl, validate_callback_url
from app.worker.dispatch import operate, submit

# Every route needs a user: 401 without one, 403 for an inactive one.
router = APIRouter(
    prefix=API_PREFIX, tags=["jobs"], responses=error_responses(401, 403, 503), route_class=Route
)

# `/jobs/{id}/{action}` matches the actions alone: `POST /jobs/{id}/download` is a 405.
register_choice("job_action", [action.value for action in JobAction])
MAX_JOBS_PAGE_SIZE = 100


def _callback(url: str | None, settings: Settings) -> str | None:
    if not url:
        return None
    try:
        return validate_callback_url(url, settings)
    except InvalidCallbackUrl as exc:
        raise validation_error(["body", "callback_url"], str(exc), url) from None


@router.post(
    "/items/import",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 413),
)
async def import_items(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    file: Annotated[
        UploadFile,
        File(
            description="CSV with a `title` and an optional `description` column, "
            "at most IMPORT_MAX_BYTES and IMPORT_MAX_ROWS"
        ),
    ],
    callback_url: Annotated[
        str | None,
        Form(
            max_length=2048,
            pattern=CALLBACK_URL_PATTERN,
            description="Where the job's Standard Webhooks event is POSTed when it ends.",
        ),
    ] = None,
) -> JobPublic:
    """Upload a CSV; a job validates every row and imports all of them or none."""
    if callback_url is None and (await request.form()).get("callback_url") == "":
        # FastAPI reads an empty form field as one left out; an empty URL is not a URL.
        raise validation_error(["body", "callback_url"], "must be an http(s) URL", "")
    callback = _callback(callback_url, settings)
    job = await service.create_import(session, settings, principal, file.file, callback)
    state = app_state(request)
    await submit(background, state.db, session, settings, state.cache, job)
    return JobPublic.of(job)


@router.post(
    "/items/export",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 413),
)
async def export_items(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    body: ExportRequest | None = None,
) -> JobPublic:
    """Write the caller's items (all items for a superuser) to a CSV in the storage volume."""
    callback = _callback(body.callback_url if body else None, settings)
    job = await service.create_job(session, principal, JobKind.EXPORT, callback)
    state = app_state(request)
    await submit(background, state.db, session, settings, state.cache, job)
    return JobPublic.of(job)


@router.get("/jobs", response_model=JobPage, responses=LISTING_RESPONSES)
async def list_jobs(
    request: Request,
    response: Response,
    session: ReadSessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=MAX_JOBS_PAGE_SIZE)] = 20,
    cursor: CursorQuery = None,
) -> JobPage:
    """The caller's jobs (everybody's for a superuser), newest first."""
    page = await service.list_jobs(session, settings, principal, limit=limit, cursor=cursor)
    response.headers.update(link_header(request, page.next, page.prev))
    return JobPage(
        items=[JobPublic.of(job) for job in page.rows], limit=limit, next=page.next, prev=page.prev
    )


@router.get("/jobs/{job_id:uuid}", response_model=JobPublic, responses=error_responses(404))
async def read_job(
    job_id: uuid.UUID, session: ReadSessionDep, principal: CurrentPrincipal
) -> JobPublic:
    """State and progress (rows done / total) of a job, its report, its webhook."""
    return JobPublic.of(await service.get_job(session, principal, job_id))


@router.post(
    "/jobs/{job_id:uuid}/{action:job_action}",
    response_model=JobPublic,
    responses=error_responses(404, 409),
)
async def operate_job(
    request: Request,
    background: BackgroundTasks,
    job_id: uuid.UUID,
    action: JobAction,
    settings: SettingsDep,
    _admin: CurrentSuperuser,
) -> JobPublic:
    """Superusers: `fail` a job now, or `retry` it from the start (queued again)."""
    state = app_state(request)
    job = await operate(background, state.db, settings, state.cache, job_id, action)
    return JobPublic.of(job)


@router.delete(
    "/jobs/{job_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404, 409),
)
async def delete_job(
    job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> Response:
    """Delete a finished job and its file now (409 while it is queued or running); finished
    jobs are deleted JOB_RETENTION_DAYS after they ended in any case."""
    await service.delete_job(session, settings, principal, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/jobs/{job_id:uuid}/download",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The CSV file"},
        **error_responses(404, 409),
    },
)
async def download_export(
    job_id: uuid.UUID, session: ReadSessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """The CSV of a finished export."""
    return export_download(settings, await service.get_job(session, principal, job_id))
