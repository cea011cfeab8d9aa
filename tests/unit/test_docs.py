"""The documentation stays true: the configuration table is the one the Settings class
generates, every relative link and anchor leads somewhere, every `make` target, repository
path and setting name it quotes exists, and the README stays a short front page."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

from tools.config_docs import render_block

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
MAKE_TARGET = re.compile(r"`make ([a-z][a-z0-9-]*)")
QUOTED_PATH = re.compile(
    r"`((?:app|scripts|tests|docker|deploy|bench|tools|docs|\.github|\.ci)/[^`\s]*)`"
)
QUOTED_NAME = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`")
FOREIGN_NAMES = {"PG_TRGM"}  # other systems' names the docs quote (Azure's extension list)
# Targets the Makefile defines: `name:` at the start of a line (not variables, not files).
TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_configuration_table_is_current() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert render_block() in text, "docs/configuration.md is stale: run `make docs`"


def test_readme_quick_start_is_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick_start.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    assert commands == ["make run", "make test"]
    # CI runs the README's test command itself, last, never a private variant.
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci if line and not line.startswith("#")][-1] == "make test"


def test_readme_is_a_short_front_page() -> None:
    """What it is, the two commands, production locally, the commands, links: topics live
    in docs/ (the README was one 48 KB page)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 6 * 1024
    assert "make prod-local" in readme.split("## Try production locally", 1)[1]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_exists(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or (file.suffix == ".md" and anchor not in {"", *_anchors(file)}):
            broken.append(target)
    assert broken == [], f"{doc.name}: links that lead nowhere"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_make_target_named_exists(doc: Path) -> None:
    named = set(MAKE_TARGET.findall(doc.read_text(encoding="utf-8")))
    assert named - TARGETS == set(), f"{doc.name} names targets the Makefile does not have"


@functools.cache
def _code() -> str:
    """Every tracked file but the docs, as text: where a quoted name has to appear."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return "\n".join(
        (ROOT / name).read_text(encoding="utf-8", errors="ignore")
        for name in tracked
        if not name.endswith((".md", ".png", ".svg")) and (ROOT / name).is_file()
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_and_setting_name_it_quotes_exists(doc: Path) -> None:
    """The docs once named a migration number that was already the head, and a layout that
    put a file where it was not: every repository path they quote exists (patterns and
    placeholders aside), and every setting or variable name they quote is in the code."""
    text = doc.read_text(encoding="utf-8")
    paths = {
        found.split("::")[0].split(":")[0].rstrip(".,;)")
        for found in QUOTED_PATH.findall(text)
        if not any(mark in found for mark in "*<{…$")
    }
    assert {path for path in paths if not (ROOT / path).exists()} == set(), doc.name
    names = set(QUOTED_NAME.findall(text)) - FOREIGN_NAMES
    assert {name for name in names if name not in _code()} == set(), doc.name
