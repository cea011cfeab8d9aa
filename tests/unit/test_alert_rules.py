"""The alert rules (monitoring/prometheus/rules) as operators read them: every alert says how
urgent it is, what happened, and where its runbook is; the runbook exists. Their behaviour is
tested by `promtool test rules` (tests/container/test_monitoring.py)."""

from __future__ import annotations

from typing import Any

import yaml

from tests.docker_utils import ROOT
from tests.unit.test_docs import _anchors

RULES = ROOT / "monitoring" / "prometheus" / "rules" / "shipshape.yml"


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_severity_a_summary_and_its_runbook() -> None:
    anchors = _anchors(ROOT / "docs" / "operations.md")
    alerts = _alerts()
    assert len(alerts) == 18
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}, name
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert set(rule["annotations"]) == {"summary", "runbook"}, name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#alert-{name.lower()}"
        assert f"alert-{name.lower()}" in anchors, f"{name}: no runbook in docs/operations.md"
