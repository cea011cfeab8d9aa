"""Every use of another library's private API, in one place, each for a measured reason.

Upstream may change these without notice: tests/unit/test_compat.py fails when one stops
doing what it is used for here, and names the function to look at. (The database pool's
fair queue subclasses SQLAlchemy's private `_do_get`/`_do_return_conn` in
app/db/session.py; tests/unit/test_pool.py holds it to its behaviour.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None: asyncio.get_running_loop() raises outside a loop,
    and the log handler asks for every record (raising and catching costs more)."""
    return asyncio.events._get_running_loop()


def skip_caller_lookup() -> None:
    """Log records stop looking up their caller's frame (file, line, function), the costliest
    part of a log call; the JSON schema has no field for them. logging has no public switch."""
    logging._srcfile = None


def prometheus_process_id(identify: Callable[[], int]) -> None:
    """prometheus_client's multiprocess values ask `identify` for the process id instead of
    calling os.getpid() on every sample update (a system call, several per request). There is
    no public hook: the module's ValueClass is replaced."""
    from prometheus_client import values  # imported late: its mode is fixed on import

    values.ValueClass = values.MultiProcessValue(process_identifier=identify)  # type: ignore[no-untyped-call]
