"""The web UI's pages. Like the API's routes they only translate HTTP: forms in, services
called with the signed-in principal, HTML out. Every page works as plain HTML forms;
app.js only adds progress polling on a running job's page.

Each state-changing form posts with the session's CSRF token (`FormUserDep`) and answers
with a redirect (post/redirect/get), so reloading a page never repeats an action.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.client import client_address, device_cookie, set_device_cookie
from app.api.deps import (
    CacheDep,
    CursorQuery,
    LoginGuardDep,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    app_state,
)
from app.api.errors import retry_after, status_of
from app.api.exports import export_download
from app.api.routing import Route
from app.core.config import Settings
from app.core.security import MAX_TOKEN_LENGTH
from app.core.states import JobKind
from app.schemas.common import SearchText
from app.schemas.items import ItemCreate, ItemUpdate
from app.schemas.jobs import JobPublic
from app.schemas.users import PasswordChange, PasswordResetConfirm, PasswordResetRequest, UserCreate
from app.services import items as items_service
from app.services import jobs as jobs_service
from app.services import passwords, sessions
from app.services import users as users_service
from app.services.errors import Forbidden, ServiceError
from app.services.health import run_checks
from app.services.jobs import JobAction
from app.services.pagination import Listed
from app.services.sessions import SignedIn
from app.services.webhooks import InvalidCallbackUrl, validate_callback_url
from app.web.assets import app_assets
from app.web.auth import (
    PAGE_HEADERS,
    FormUserDep,
    SignedInDep,
    check_login_token,
    clear_session_cookie,
    login_url,
    new_login_token,
    safe_next,
    session_token,
    set_login_cookie,
    set_session_cookie,
)
from app.worker.dispatch import operate, submit, submit_password_reset

PAGE_SIZE = 20
IMPORT_PATH = "/import"
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

# Confirmations after a redirect: the query names one of these, never free text.
NOTICES = {
    "created": "Item created.",
    "saved": "Item saved.",
    "deleted": "Item deleted.",
    "user-created": "User created.",
    "user-activated": "User activated.",
    "user-deactivated": "User deactivated: signed out everywhere.",
    "signed-out": "You are signed out.",
    "password-changed": "Password changed: every other sign-in of yours has ended.",
    "password-reset": "Your password is changed. Sign in with the new one.",
    "reset-requested": "If an account has this address, an e-mail with a link to choose a "
    "new password is on its way.",
    "job-operated": "Job updated.",
    "job-deleted": "Job deleted, with its file.",
}

Notice = Annotated[str | None, Query(max_length=32)]


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    *,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page, with the UI's security headers."""
    settings = app_state(request).settings
    assets = app_assets(request)
    static = f"{settings.ui_path}/static"
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "ui": settings.ui_path,
            "app_name": settings.app_name,
            "asset": lambda source: f"{static}/{assets.name(source)}",
            **context,
        },
        status_code=status_code,
        headers={**PAGE_HEADERS, **(headers or {})},
    )
    return response


def redirect(settings: Settings, path: str, notice: str | None = None) -> RedirectResponse:
    url = f"{settings.ui_path}{path}"
    if notice is not None:
        url += f"{'&' if '?' in url else '?'}notice={notice}"
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _pager(found: Listed[Any], cursor: str | None) -> dict[str, Any]:
    """What _pager.html links to: the older and newer pages, and the first page from any
    other page."""
    return {"next": found.next, "prev": found.prev, "paged": cursor is not None}


def _errors(exc: ValidationError) -> dict[str, str]:
    """Each field's first problem, for the form."""
    found: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "form"
        found.setdefault(field, str(error["msg"]))
    return found


def _superuser(user: SignedIn) -> SignedIn:
    if not user.principal.is_superuser:
        raise Forbidden("superuser required")
    return user


# --- signing in and out ----------------------------------------------------------------------


async def home(settings: SettingsDep) -> RedirectResponse:
    return redirect(settings, "/items")


async def login_page(
    request: Request,
    settings: SettingsDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
    notice: Notice = None,
) -> HTMLResponse:
    return _login_form(request, settings, next_path, notice=NOTICES.get(notice or ""))


def _login_form(
    request: Request,
    settings: Settings,
    next_path: str | None,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
    headers: dict[str, str] | None = None,
    username: str = "",
) -> HTMLResponse:
    return _anonymous_form(
        request, settings, "login.html", status_code, headers,
        next=safe_next(settings, next_path), error=error, notice=notice, username=username,
    )  # fmt: skip


async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    guard: LoginGuardDep,
    username: Annotated[str, Form(max_length=1024)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=1024)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "",
) -> Response:
    """The API's sign-in (same throttling), ending in a session cookie instead of a token."""
    check_login_token(request, csrf_token)
    client = client_address(request)
    try:
        found = await users_service.log_in(
            session, guard, settings, username, password, client, device_cookie(request)
        )
    except ServiceError as exc:
        retry = retry_after(exc)
        return _login_form(
            request, settings, next_path, status_of(exc), exc.detail, None, retry, username
        )
    token = await sessions.start(session, settings, found.user.id)
    response = RedirectResponse(safe_next(settings, next_path), status_code=303)
    set_session_cookie(response, settings, token)
    set_device_cookie(response, settings, found.device_token, path=f"{settings.ui_path}/login")
    return response


async def logout(
    request: Request, session: SessionDep, settings: SettingsDep, _user: FormUserDep
) -> RedirectResponse:
    await sessions.end(session, session_token(request))
    response = RedirectResponse(f"{login_url(settings)}?notice=signed-out", status_code=303)
    clear_session_cookie(response, settings)
    return response


# --- passwords -------------------------------------------------------------------------------


async def password_page(request: Request, user: SignedInDep) -> HTMLResponse:
    return render(request, "password.html", user=user, errors={})


async def change_password(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    guard: LoginGuardDep,
    user: FormUserDep,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Every session of the user ends, this browser's too; it gets a new one at once."""
    try:
        data = PasswordChange(current_password=current_password, new_password=new_password)
        await passwords.change_password(
            session,
            cache,
            guard,
            user.principal,
            data.current_password,
            data.new_password,
            client_address(request),
        )
    except ValidationError as exc:
        return render(request, "password.html", 400, user=user, errors=_errors(exc))
    except passwords.WrongPassword as exc:  # a field of the form that is wrong, as any other
        errors = {"form": exc.detail}
        return render(request, "password.html", 400, user=user, errors=errors)
    except ServiceError as exc:
        retry = retry_after(exc)
        errors = {"form": exc.detail}
        return render(
            request, "password.html", status_of(exc), headers=retry, user=user, errors=errors
        )
    token = await sessions.start(session, settings, user.principal.id)
    response = redirect(settings, "/items", "password-changed")
    set_session_cookie(response, settings, token)
    return response


async def forgot_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _anonymous_form(request, settings, "forgot.html")


def _anonymous_form(
    request: Request,
    settings: Settings,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A form for somebody not signed in (sign in, forgotten password, reset), with a new
    double-submit token: the post must come with the cookie set here."""
    token = new_login_token()
    context.setdefault("errors", {})
    response = render(request, template, status_code, headers=headers, login_token=token, **context)
    set_login_cookie(response, settings, token)
    return response


async def forgot_password(
    request: Request,
    background: BackgroundTasks,
    settings: SettingsDep,
    guard: LoginGuardDep,
    email: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """The API's reset request, answered with the same notice for every address."""
    check_login_token(request, csrf_token)
    try:
        data = PasswordResetRequest(email=email)
        if await passwords.may_request_reset(guard, settings, data.email, client_address(request)):
            await submit_password_reset(background, app_state(request).db, settings, data.email)
    except ValidationError as exc:
        return render(request, "forgot.html", 400, login_token=csrf_token, errors=_errors(exc))
    except ServiceError as exc:
        retry = retry_after(exc)
        errors = {"form": exc.detail}
        return render(
            request, "forgot.html", status_of(exc), headers=retry, login_token=csrf_token,
            errors=errors,
        )  # fmt: skip
    return RedirectResponse(
        f"{login_url(settings)}?notice=reset-requested",
        status_code=303,
        headers={"Cache-Control": "no-store"},
    )


async def reset_page(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str, Query(max_length=MAX_TOKEN_LENGTH)] = "",
) -> HTMLResponse:
    """The form of the reset e-mail's link; the token goes on in the form."""
    return _anonymous_form(request, settings, "reset.html", token=token)


async def reset_password(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    token: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    check_login_token(request, csrf_token)
    try:
        data = PasswordResetConfirm(token=token, new_password=new_password)
        await passwords.complete_reset(session, cache, data.token, data.new_password)
    except ValidationError as exc:
        errors = _errors(exc)
        if "token" in errors:
            errors = {"form": "this password reset link is not valid (used or expired)"}
        return render(
            request, "reset.html", 400, token=token, login_token=csrf_token, errors=errors
        )
    except ServiceError as exc:
        return render(
            request, "reset.html", status_of(exc), token=token, login_token=csrf_token,
            errors={"form": exc.detail},
        )  # fmt: skip
    return RedirectResponse(
        f"{login_url(settings)}?notice=password-reset",
        status_code=303,
        headers={"Cache-Control": "no-store"},
    )


# --- items -----------------------------------------------------------------------------------


async def items_page(
    request: Request,
    session: ReadSessionDep,
    user: SignedInDep,
    settings: SettingsDep,
    q: Annotated[SearchText | None, Query(description="Title search.")] = None,
    cursor: CursorQuery = None,
    notice: Notice = None,
) -> HTMLResponse:
    found = await items_service.list_items(
        session, settings, user.principal, limit=PAGE_SIZE, cursor=cursor, search=q or None
    )
    return render(
        request,
        "items.html",
        user=user,
        items=found.rows,
        q=q or "",
        notice=NOTICES.get(notice or ""),
        **_pager(found, cursor),
    )


def _item_form(
    request: Request,
    user: SignedIn,
    values: dict[str, str],
    errors: dict[str, str],
    item_id: uuid.UUID | None = None,
) -> HTMLResponse:
    return render(
        request, "item.html", 400, user=user, item_id=item_id, values=values, errors=errors
    )


async def create_item(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: FormUserDep,
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    values = {"title": title, "description": description}
    try:
        data = ItemCreate(title=title, description=description or None)
    except ValidationError as exc:
        return _item_form(request, user, values, _errors(exc))
    await items_service.create_item(session, cache, user.principal, data)
    return redirect(settings, "/items", "created")


async def item_page(
    request: Request,
    item_id: uuid.UUID,
    session: ReadSessionDep,
    cache: CacheDep,
    user: SignedInDep,
) -> HTMLResponse:
    item = await items_service.read_item(session, cache, user.principal, item_id)
    values = {"title": item.title, "description": item.description or ""}
    return render(request, "item.html", user=user, item_id=item.id, values=values, errors={})


async def update_item(
    request: Request,
    item_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: FormUserDep,
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    values = {"title": title, "description": description}
    try:
        data = ItemUpdate(title=title, description=description or None)
    except ValidationError as exc:
        return _item_form(request, user, values, _errors(exc), item_id)
    await items_service.update_item(session, cache, user.principal, item_id, data)
    return redirect(settings, "/items", "saved")


async def delete_item(
    item_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: FormUserDep,
) -> RedirectResponse:
    await items_service.delete_item(session, cache, user.principal, item_id)
    return redirect(settings, "/items", "deleted")


# --- jobs: import, export, progress, download ------------------------------------------------


async def import_page(request: Request, settings: SettingsDep, user: SignedInDep) -> HTMLResponse:
    return _import_form(request, settings, user)


def _import_form(
    request: Request,
    settings: Settings,
    user: SignedIn,
    status_code: int = 200,
    error: str | None = None,
    callback_url: str = "",
) -> HTMLResponse:
    return render(
        request,
        "import.html",
        status_code,
        user=user,
        error=error,
        callback_url=callback_url,
        max_bytes=settings.import_max_bytes,
        max_rows=settings.import_max_rows,
    )


def _callback(settings: Settings, url: str) -> str | None:
    return validate_callback_url(url.strip(), settings) if url.strip() else None


async def import_items(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    user: FormUserDep,
    file: Annotated[UploadFile, File()],
    callback_url: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    try:
        callback = _callback(settings, callback_url)
    except InvalidCallbackUrl as exc:
        return _import_form(request, settings, user, 400, f"Webhook URL: {exc}", callback_url)
    try:
        job = await jobs_service.create_import(
            session, settings, user.principal, file.file, callback
        )
    except ServiceError as exc:
        return _import_form(request, settings, user, status_of(exc), exc.detail, callback_url)
    state = app_state(request)
    await submit(background, state.db, session, settings, state.cache, job)
    return redirect(settings, f"/jobs/{job.id}")


async def export_items(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    user: FormUserDep,
) -> RedirectResponse:
    job = await jobs_service.create_job(session, user.principal, JobKind.EXPORT, None)
    state = app_state(request)
    await submit(background, state.db, session, settings, state.cache, job)
    return redirect(settings, f"/jobs/{job.id}")


async def jobs_page(
    request: Request,
    session: ReadSessionDep,
    settings: SettingsDep,
    user: SignedInDep,
    cursor: CursorQuery = None,
    notice: Notice = None,
) -> HTMLResponse:
    found = await jobs_service.list_jobs(
        session, settings, user.principal, limit=PAGE_SIZE, cursor=cursor
    )
    return render(
        request,
        "jobs.html",
        user=user,
        jobs=[JobPublic.of(job) for job in found.rows],
        notice=NOTICES.get(notice or ""),
        **_pager(found, cursor),
    )


async def job_page(
    request: Request,
    job_id: uuid.UUID,
    session: ReadSessionDep,
    user: SignedInDep,
    notice: Notice = None,
) -> HTMLResponse:
    job = JobPublic.of(await jobs_service.get_job(session, user.principal, job_id))
    return render(
        request,
        "job.html",
        user=user,
        job=job,
        actions=jobs_service.allowed_actions(job.state) if user.principal.is_superuser else [],
        retention_days=app_state(request).settings.job_retention_days,
        notice=NOTICES.get(notice or ""),
    )


async def job_progress(job_id: uuid.UUID, session: ReadSessionDep, user: SignedInDep) -> Response:
    """What the job page polls: state and progress, as JSON."""
    job = await jobs_service.get_job(session, user.principal, job_id)
    return JSONResponse(
        {
            "state": job.state.value,
            "finished": job.state.finished,
            "done": job.done,
            "total": job.total,
        },
        headers={"Cache-Control": "no-store"},
    )


async def download(
    job_id: uuid.UUID, session: ReadSessionDep, settings: SettingsDep, user: SignedInDep
) -> Response:
    return export_download(settings, await jobs_service.get_job(session, user.principal, job_id))


async def delete_job(
    job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, user: FormUserDep
) -> RedirectResponse:
    await jobs_service.delete_job(session, settings, user.principal, job_id)
    return redirect(settings, "/jobs", "job-deleted")


async def operate_job(
    request: Request,
    background: BackgroundTasks,
    job_id: uuid.UUID,
    action: JobAction,
    settings: SettingsDep,
    user: FormUserDep,
) -> RedirectResponse:
    _superuser(user)
    state = app_state(request)
    await operate(background, state.db, settings, state.cache, job_id, action)
    return redirect(settings, f"/jobs/{job_id}", "job-operated")


# --- superusers: users and status ------------------------------------------------------------


async def users_page(
    request: Request,
    session: ReadSessionDep,
    user: SignedInDep,
    cursor: CursorQuery = None,
    notice: Notice = None,
) -> HTMLResponse:
    _superuser(user)
    return await _users(request, session, user, cursor, notice=NOTICES.get(notice or ""))


async def _users(
    request: Request,
    session: AsyncSession,
    user: SignedIn,
    cursor: str | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    settings = app_state(request).settings
    found = await users_service.list_users(session, settings, limit=PAGE_SIZE, cursor=cursor)
    context.setdefault("values", {})
    context.setdefault("errors", {})
    pager = _pager(found, cursor)
    return render(
        request, "users.html", status_code, user=user, users=found.rows, **pager, **context
    )


async def create_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: FormUserDep,
    username: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    is_superuser: Annotated[bool, Form()] = False,
) -> Response:
    _superuser(user)
    values = {"username": username, "email": email, "is_superuser": is_superuser}
    try:
        data = UserCreate(
            username=username, email=email, password=password, is_superuser=is_superuser
        )
        await users_service.create_user(session, data)
    except ValidationError as exc:
        return await _users(request, session, user, None, 400, values=values, errors=_errors(exc))
    except ServiceError as exc:
        errors = {"form": exc.detail}
        return await _users(
            request, session, user, None, status_of(exc), values=values, errors=errors
        )
    return redirect(settings, "/users", "user-created")


async def set_user_active(
    user_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: FormUserDep,
    active: Annotated[bool, Form()],
) -> RedirectResponse:
    _superuser(user)
    await users_service.set_active(session, cache, user.principal, user_id, active)
    return redirect(settings, "/users", "user-activated" if active else "user-deactivated")


async def status_page(request: Request, user: SignedInDep) -> HTMLResponse:
    """The /health report as a table, and the jobs per state."""
    _superuser(user)
    state = app_state(request)
    healthy, checks = await run_checks(state.db, state.redis, state.settings.ready_timeout_seconds)
    report = await jobs_service.queue_report(state.db)
    return render(
        request,
        "status.html",
        user=user,
        healthy=healthy,
        checks=checks,
        counts=report.counts if report is not None else None,
        settings=state.settings,
        uptime=round(state.health.uptime_seconds),
    )


# --- static files ----------------------------------------------------------------------------


async def static_file(request: Request, name: str) -> Response:
    """A fingerprinted file: cached for a year (its name changes with its content)."""
    asset = app_assets(request).by_name.get(name)
    if asset is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    return FileResponse(
        asset.path,
        media_type=asset.media_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


ROUTES: list[tuple[str, Callable[..., Any], list[str]]] = [
    ("", home, ["GET"]),
    ("/", home, ["GET"]),
    ("/login", login_page, ["GET"]),
    ("/login", login, ["POST"]),
    ("/logout", logout, ["POST"]),
    ("/account/password", password_page, ["GET"]),
    ("/account/password", change_password, ["POST"]),
    ("/forgot-password", forgot_page, ["GET"]),
    ("/forgot-password", forgot_password, ["POST"]),
    (passwords.RESET_PATH, reset_page, ["GET"]),
    (passwords.RESET_PATH, reset_password, ["POST"]),
    ("/items", items_page, ["GET"]),
    ("/items", create_item, ["POST"]),
    ("/items/{item_id:uuid}", item_page, ["GET"]),
    ("/items/{item_id:uuid}", update_item, ["POST"]),
    ("/items/{item_id:uuid}/delete", delete_item, ["POST"]),
    (IMPORT_PATH, import_page, ["GET"]),
    (IMPORT_PATH, import_items, ["POST"]),
    ("/export", export_items, ["POST"]),
    ("/jobs", jobs_page, ["GET"]),
    ("/jobs/{job_id:uuid}", job_page, ["GET"]),
    ("/jobs/{job_id:uuid}/progress", job_progress, ["GET"]),
    ("/jobs/{job_id:uuid}/download", download, ["GET"]),
    ("/jobs/{job_id:uuid}/delete", delete_job, ["POST"]),  # before the operators' actions
    ("/jobs/{job_id:uuid}/{action:job_action}", operate_job, ["POST"]),
    ("/users", users_page, ["GET"]),
    ("/users", create_user, ["POST"]),
    ("/users/{user_id:uuid}/active", set_user_active, ["POST"]),
    ("/status", status_page, ["GET"]),
    ("/static/{name}", static_file, ["GET"]),
]


def router(settings: Settings) -> APIRouter:
    """The UI's routes under its path; not part of the API document."""
    pages = APIRouter(prefix=settings.ui_path, include_in_schema=False, route_class=Route)
    for path, endpoint, methods in ROUTES:
        pages.add_api_route(path, endpoint, methods=methods, response_model=None)
    return pages
