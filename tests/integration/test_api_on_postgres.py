"""The fast tier's data-access and health tests, run again on a real Postgres.

They are the same functions (imported), with the `settings` fixture of this directory
pointing them at a fresh Postgres database per test.
"""

from __future__ import annotations

import pytest

from tests.unit.test_auth import *  # noqa: F403
from tests.unit.test_health import (  # noqa: F401
    test_health_is_the_full_report_with_build_facts,
    test_ready_is_503_when_migrations_are_behind,
    test_ready_is_503_while_shutting_down,
    test_ready_reports_each_check,
)
from tests.unit.test_items import *  # noqa: F403

pytestmark = pytest.mark.integration
