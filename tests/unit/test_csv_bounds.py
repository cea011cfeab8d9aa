"""The CSV reader bounds what one row may cost before it builds the row: a line longer than
any valid row is refused with its number, so a file's shape cannot grow an import's memory
(a 5 MB file whose one row held 5,000,000 commas added 47 MiB per import)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from app.services.csvfiles import MAX_LINE_CHARS, CsvProblem, ItemCsvReader

MIB = 2**20


def _peak_while_reading(path: Path) -> tuple[int, str]:
    tracemalloc.start()
    try:
        with pytest.raises(CsvProblem) as refused, ItemCsvReader(path, 1_000_000) as reader:
            reader.count()
        return tracemalloc.get_traced_memory()[1], str(refused.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("commas", b"title,description\n" + b"," * 5_000_000 + b"\n"),
        ("a header of commas", b"title" + b"," * 5_000_000 + b"\n"),
        ("one long quoted field", b'title,description\n"' + b"x" * 5_000_000 + b'",\n'),
        ("no line break", b"title,description\n" + b"y" * 5_000_000),
    ],
)
def test_a_line_longer_than_any_valid_row_is_refused_before_it_is_built(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(content)
    peak, message = _peak_while_reading(path)
    assert peak < 4 * MIB, f"{name}: {peak / MIB:.1f} MiB"
    line = 1 if name.startswith("a header") else 2
    assert message == (
        f"line {line} is longer than {MAX_LINE_CHARS} characters: no valid row is that long"
    )


def test_the_longest_valid_row_is_read(tmp_path: Path) -> None:
    """Every column at csv's field limit, every character a doubled quote: still one line."""
    field = '"' + '""' * 10_000 + '"'
    path = tmp_path / "long.csv"
    path.write_text("title,description,id,created_at,updated_at\n" + ",".join([field] * 5) + "\n")
    with ItemCsvReader(path, 10) as reader:
        [row] = reader.chunk(10)
    assert row.values is not None
    assert row.values["description"] == '"' * 10_000
