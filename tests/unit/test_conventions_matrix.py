"""docs/conventions.md, the compliance matrix, checked against the project and against the
items of the two conventions documents it answers for.

The items are committed in docs/conventions-index.txt, so the check runs in any clone. The
documents live outside this repository (CONVENTIONS_DIR, or `../shared/conventions` next to
the checkout); where they are, the index is checked against them too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tools.conventions_index import (
    BEST_PRACTICES,
    CONVENTIONS,
    documents_dir,
    items_of_documents,
    read_index,
)
from tools.matrix import Row, matrix_rows

ROOT = Path(__file__).resolve().parents[2]


ROWS = matrix_rows()


def test_the_matrix_has_rows_for_both_documents() -> None:
    documents = {row.document for row in ROWS}
    assert documents == {BEST_PRACTICES, CONVENTIONS}
    assert len(ROWS) > 100


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.section}: {r.item}"[:80])
def test_every_row_points_at_real_files_and_tests_and_has_a_status(row: Row) -> None:
    assert row.where, "no file named"
    for path in row.where:
        assert (ROOT / path).exists(), f"missing file {path}"
    assert row.tests, "no test named"
    for reference in row.tests:
        path, _, name = reference.partition("::")
        test_file = ROOT / path
        assert test_file.is_file(), f"missing test file {path}"
        assert re.search(rf"^(async )?def {re.escape(name)}\(", test_file.read_text(), re.M), (
            f"no test {name} in {path}"
        )
    assert row.status == "done" or (row.status.startswith("deviates: ") and len(row.status) > 40), (
        f"status must be 'done' or 'deviates: <reason>', not {row.status!r}"
    )


def test_rows_are_unique() -> None:
    keys = [(row.document, row.section, row.item) for row in ROWS]
    assert len(keys) == len(set(keys))


def test_every_item_of_the_documents_has_a_row_and_every_row_an_item() -> None:
    expected = read_index()
    present = {(row.document, row.section, row.item) for row in ROWS}
    assert sorted(expected - present) == [], "items without a row"
    assert sorted(present - expected) == [], "rows that name no item of the documents"


def test_the_index_lists_the_items_of_the_documents() -> None:
    directory = documents_dir()
    if directory is None:
        # Asked for and missing is an error anywhere; not asked for, the check is skipped
        # (a plain checkout, e.g. on GitHub, does not carry the documents).
        if os.environ.get("CONVENTIONS_DIR"):
            pytest.fail(f"CONVENTIONS_DIR={os.environ['CONVENTIONS_DIR']} has no documents")
        pytest.skip("the conventions documents are not here: set CONVENTIONS_DIR to check them")
    assert read_index() == items_of_documents(directory), (
        "docs/conventions-index.txt differs from the documents: run `make docs`"
    )


def test_no_image_is_used_by_its_latest_tag() -> None:
    files = [ROOT / "docker" / "Dockerfile.prod", ROOT / "docker" / "Dockerfile.dev",
             *ROOT.glob("docker-compose*.yml"), *ROOT.glob("docker-stack*.yml")]  # fmt: skip
    for path in files:
        text = path.read_text()
        images = re.findall(r"^\s*image:\s*(\S+)", text, re.M)
        images += re.findall(r"^FROM\s+(\S+)", text, re.M)
        stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.M)) | {"scratch"}
        for image in images:
            assert not image.endswith(":latest"), f"{path.name}: {image}"
            if "$" not in image and image not in stages:
                assert ":" in image, f"{path.name}: {image} has no tag"
