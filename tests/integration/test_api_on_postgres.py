"""The fast tier's data-access, health and hostile-input tests, run again on a real
Postgres (NUL bytes, for one, are refused by Postgres and stored by SQLite).

They are the same functions (imported), with the `settings` fixture of this directory
pointing them at a fresh Postgres database per test.
"""

from __future__ import annotations

from tests.unit.test_auth import *  # noqa: F403
from tests.unit.test_health import (  # noqa: F401
    test_health_is_the_full_report_with_build_facts,
    test_ready_is_503_when_migrations_are_behind,
    test_ready_is_503_while_shutting_down,
    test_ready_reports_each_check,
)
from tests.unit.test_hostile_input import *  # noqa: F403
from tests.unit.test_items import *  # noqa: F403
from tests.unit.test_login_protection import (  # noqa: F401
    clients,
    test_a_success_clears_the_failures,
    test_password_spraying_over_many_accounts_is_throttled_per_address,
    test_repeated_failures_are_throttled_without_locking_out_the_real_user,
)
