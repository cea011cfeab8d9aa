"""`make prove`: the breaking edits of docs/mutations.yml stay applicable, the matrix shows
which rows they prove, and the prover tells a killed edit from a surviving one."""

from __future__ import annotations

from pathlib import Path

from tools import prove
from tools.matrix import MATRIX, ROOT, matrix_rows

DOCKERFILE_TEST = (
    "tests/unit/test_dockerfiles.py::test_production_dockerfile_follows_the_conventions"
)


def test_every_declared_edit_names_a_row_and_applies_exactly_once() -> None:
    mutations, problems = prove.plan(everything=True, only=None)
    assert problems == []
    assert len({m.row.key for m in mutations}) > 100


def test_the_matrix_shows_how_each_row_is_proved() -> None:
    text = MATRIX.read_text(encoding="utf-8")
    assert prove.status_table() in text, "run `make docs`"
    assert text.count("| `make prove") + text.count("| not yet") == len(matrix_rows())


def test_a_breaking_edit_is_killed_and_a_harmless_one_survives(tmp_path: Path) -> None:
    tree = prove.scratch_copy(tmp_path / "tree")
    (row,) = [
        r for r in matrix_rows() if r.key == "Dockerfile Best Practices / Base Image Selection"
    ]
    breaking = prove.Edit(
        "docker/Dockerfile.prod", "FROM python:3.11-slim AS base", "FROM python:3.11 AS base"
    )
    harmless = prove.Edit(
        "docker/Dockerfile.prod", "# --- base: what every stage shares", "# --- base"
    )
    killed = prove.prove(prove.Mutation(row, breaking, (DOCKERFILE_TEST,)), tree)
    survived = prove.prove(prove.Mutation(row, harmless, (DOCKERFILE_TEST,)), tree)
    assert (killed.verdict, survived.verdict) == ("killed", "survived")
    # The copy is as it was after each edit.
    assert (tree / "docker/Dockerfile.prod").read_text() == (
        ROOT / "docker/Dockerfile.prod"
    ).read_text()
