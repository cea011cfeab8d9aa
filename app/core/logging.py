"""JSON-lines logging on stdout: one schema for application, access and error records.

Every record is one JSON object with at least `ts`, `level`, `logger`, `message` and,
inside a request, `request_id`. Extra fields passed with `extra={"fields": {...}}` are
merged at the top level, so log pipelines can index them without parsing messages.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from app.core._compat import running_loop, skip_caller_lookup

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_configured_handler: logging.Handler | None = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


_second_cache: tuple[int, str] = (-1, "")


def _iso_time(created: float) -> str:
    # The date and time part changes once a second: format it once per second, not per line.
    global _second_cache
    whole = int(created)
    if _second_cache[0] != whole:
        _second_cache = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second_cache[1]}.{int((created - whole) * 1000):03d}Z"


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (test capture, redirection).

    Inside a running event loop, the lines of one loop iteration are written together
    right after it (one system call for many access-log lines under load, the same
    moment when idle); warnings and errors, and lines from other threads, go out at once.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self._pending: list[str] = []

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            self._pending.append(self.format(record) + "\n")
            loop = running_loop()
            if loop is None or record.levelno >= logging.WARNING:
                self._write_pending()
            elif len(self._pending) == 1:  # the first line of this iteration schedules the write
                loop.call_soon(self.flush)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            text, self._pending = "".join(self._pending), []
            self.stream.write(text)
            self.stream.flush()


def configure_logging(level: str = "info") -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through one JSON handler."""
    global _configured_handler
    # The schema has no source file, thread or process fields: skip collecting them for
    # every record (finding the caller's frame is the costliest part of a log call).
    skip_caller_lookup()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    if _configured_handler is not None:
        root.removeHandler(_configured_handler)
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    _configured_handler = handler
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        # Their own handlers would print a second, non-JSON line.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Alembic announces every plugin it loads at INFO: noise in a service log.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # The access log is written by our middleware, in the same schema.
    logging.getLogger("uvicorn.access").disabled = True


def log_fields(**fields: Any) -> dict[str, Any]:
    """`logger.info("...", extra=log_fields(key=value))`."""
    return {"fields": fields}


def error_text(exc: BaseException) -> str:
    """The first line of what went wrong, from the driver's error when there is one
    (SQLAlchemy wraps it as `.orig`)."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else ""


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line`, short enough for a JSON report or a progress line."""
    return f"{type(exc).__name__}: {error_text(exc)}"[:limit]
