"""The private APIs app/core/_compat.py relies on still do what it uses them for."""

from __future__ import annotations

import asyncio
import logging
import os

from app.core import _compat


def test_running_loop_is_the_loop_inside_one_and_none_outside() -> None:
    assert _compat.running_loop() is None

    async def inside() -> bool:
        return _compat.running_loop() is asyncio.get_running_loop()

    assert asyncio.run(inside())


def test_skip_caller_lookup_leaves_records_without_a_caller() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("compat-test")
    logger.addHandler(keep := Keep())
    logger.propagate = False
    before = logging._srcfile
    try:
        # logging's own default (an earlier test may have configured the service's logging)
        logging._srcfile = os.path.normcase(logging.addLevelName.__code__.co_filename)
        logger.warning("with the caller")
        _compat.skip_caller_lookup()
        logger.warning("without")
    finally:
        logging._srcfile = before
        logger.removeHandler(keep)
    assert records[0].pathname == __file__
    assert (records[1].pathname, records[1].funcName) == ("(unknown file)", "(unknown function)")


def test_prometheus_values_take_the_process_id_from_the_hook(tmp_path, monkeypatch) -> None:
    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    calls: list[int] = []

    def identify() -> int:
        calls.append(1)
        return os.getpid()

    before = values.ValueClass
    try:
        _compat.prometheus_process_id(identify)
        value = values.ValueClass("counter", "c", "c", (), (), "help")
        value.inc(1)
        assert calls, "the multiprocess value did not ask the hook for the process id"
        assert value.get() == 1
    finally:
        values.ValueClass = before
