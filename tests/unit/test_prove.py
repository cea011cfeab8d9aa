"""`make prove`: the breaking edits of docs/mutations.yml stay applicable, the matrix shows
which rows they prove, and the prover tells a killed edit from a surviving one."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

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


def test_every_row_has_at_least_three_breaking_edits() -> None:
    """A row proved by one edit is proved against the one mistake its author expected."""
    declared = prove.load()
    counts = {row.key: len(declared.get(row.key, [])) for row in matrix_rows()}
    assert {key: count for key, count in counts.items() if count < 3} == {}


def test_each_edit_runs_in_exactly_one_of_prove_and_prove_all() -> None:
    every_push, problems = prove.plan(everything=False, only=None)
    weekly, _ = prove.plan(everything=True, only=None, docker_rows=True)
    assert problems == []
    assert not any(m.edit.docker for m in every_push)
    assert any(m.edit.docker for m in weekly)
    declared = sum(len(edits) for edits in prove.load().values())
    assert len(every_push) + len(weekly) == declared


def test_the_parts_of_prove_all_cover_every_edit_once() -> None:
    weekly, _ = prove.plan(everything=True, only=None, docker_rows=True)
    parts = [prove.select_part(weekly, number, 4) for number in (1, 2, 3, 4)]
    assert all(parts)
    assert sorted(id(m) for part in parts for m in part) == sorted(id(m) for m in weekly)
    assert prove._part("2/4") == (2, 4)
    for wrong in ("0/4", "5/4", "x/4", "2"):
        with pytest.raises(argparse.ArgumentTypeError, match="K/N"):
            prove._part(wrong)


def test_a_pass_with_a_skipped_test_proves_nothing() -> None:
    """A Docker tier that skipped (no engine reachable) passed, and its edit was counted as
    surviving; it is an error instead: the test never ran."""
    assert prove.skipped("....s\n4 passed, 1 skipped in 3.10s\n")
    assert prove.skipped("1 skipped in 0.01s")
    assert prove.skipped("===== 2 passed, 1 skipped, 1 warning in 1.00s =====")
    assert not prove.skipped("3 passed in 0.50s\n")
    assert not prove.skipped("1 failed, 2 passed in 1.0s")
    mutation = prove.Mutation(matrix_rows()[0], prove.Edit("f", "a", "b"), ("t",))
    assert prove._verdict(mutation, 0, "1 passed, 1 skipped in 1s", 1.0).verdict == "error"
    assert prove._verdict(mutation, 0, "2 passed in 1s", 1.0).verdict == "survived"
    assert prove._verdict(mutation, 1, "1 failed, 1 skipped in 1s", 1.0).verdict == "killed"


def test_an_edit_several_rows_declare_runs_once_and_each_row_gets_its_outcome(
    tmp_path: Path,
) -> None:
    rows = matrix_rows()[:2]
    breaking = prove.Edit(
        "docker/Dockerfile.prod", "FROM python:3.11-slim AS base", "FROM python:3.11 AS base"
    )
    harmless = prove.Edit(
        "docker/Dockerfile.prod", "# --- base: what every stage shares", "# --- base"
    )
    mutations = [
        prove.Mutation(rows[0], breaking, (DOCKERFILE_TEST,)),
        prove.Mutation(rows[0], harmless, (DOCKERFILE_TEST,)),
        prove.Mutation(rows[1], breaking, (DOCKERFILE_TEST,)),
    ]
    trees = [prove.scratch_copy(tmp_path / "tree")]
    outcomes = prove._run_all(mutations, trees, fork=False)
    assert [(o.mutation, o.verdict) for o in outcomes] == [
        (mutations[0], "killed"), (mutations[1], "survived"), (mutations[2], "killed"),
    ]  # fmt: skip
    # Two runs, not three: the same edit with the same tests gives the same outcome.
    assert outcomes[0].seconds == outcomes[2].seconds
