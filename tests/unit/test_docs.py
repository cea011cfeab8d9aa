"""The README stays true: its configuration table is the one the Settings class generates."""

from __future__ import annotations

from pathlib import Path

from app.core.config_docs import render_block

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render_block() in readme, "README.md configuration table is stale: run `make docs`"


def test_readme_quick_start_is_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start
    assert "make test" in quick_start
