"""The rows of docs/conventions.md, the compliance matrix: each item, where it is
implemented, the tests that prove it, and its status."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tools.conventions_index import CONVENTIONS

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "docs" / "conventions.md"


@dataclass(frozen=True)
class Row:
    document: str
    section: str
    item: str
    where: list[str]
    tests: list[str]
    status: str

    @property
    def key(self) -> str:
        """How the row is named elsewhere (docs/mutations.yml): `section / item`."""
        return f"{self.section} / {self.item}"


def matrix_rows(path: Path = MATRIX) -> list[Row]:
    rows: list[Row] = []
    document = section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            found = re.search(r"\((docker-[a-z-]+\.md)\)", line)
            document = found[1] if found else ""
        elif line.startswith("### "):
            section = line[4:].strip()
        elif line.startswith("| ") and document and not line.startswith("| Item"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if set(cells[0]) <= {"-", "|"}:
                continue
            item, *_asks, where, tests, status = cells
            if document == CONVENTIONS and section == "Project Structure":
                item = item.strip("`")
            rows.append(Row(document, section, item, _code(where), _code(tests), status))
    return rows


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)
