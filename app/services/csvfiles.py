"""CSV files of items, read and written with bounded memory and safe for spreadsheets.

Reading streams the file: one chunk of rows at a time, so the memory of an import does not
grow with the file. Writing neutralises formulas (OWASP "CSV injection"): a cell that a
spreadsheet would evaluate — one starting with `=`, `+`, `-`, `@`, tab or carriage
return — is written with a leading apostrophe, which spreadsheets show as text. Reading
takes that apostrophe off again, so an exported file re-imports to the same text.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.core.text import is_clean

COLUMNS = ("title", "description")
# An export's other columns: accepted and ignored, so an export re-imports as it is.
EXPORT_ONLY_COLUMNS = ("id", "created_at", "updated_at")

# A cell that is (or, once one apostrophe is removed, was) a formula: apostrophes, then a
# formula trigger. Escaping every such cell with one more apostrophe is reversible.
FORMULA_STARTS = "=+-@\t\r"
_FORMULA = re.compile(f"^'*[{re.escape(FORMULA_STARTS)}]")

# A field longer than this is refused with its line number (csv's own limit is 128 KiB).
MAX_FIELD_CHARS = 20_000
csv.field_size_limit(MAX_FIELD_CHARS)
# The longest line a valid row can have: every column at the field limit, every character a
# doubled quote, quoted, with the commas between. A longer line is refused before the csv
# module splits it: the fields of one line (5,000,000 commas are 5,000,001 fields) would
# cost memory the file's size does not show.
MAX_LINE_CHARS = (len(COLUMNS) + len(EXPORT_ONLY_COLUMNS)) * (2 * MAX_FIELD_CHARS + 3)


def neutralise(cell: str) -> str:
    """The cell as written to a CSV: formulas get a leading apostrophe."""
    return f"'{cell}" if _FORMULA.match(cell) else cell


def neutralised_sql(column: str) -> str:
    """`neutralise` in Postgres's SQL, for an export that Postgres writes itself."""
    starts = ", ".join(f"chr({ord(start)})" for start in FORMULA_STARTS)
    apostrophe = "''''"  # a string literal of one apostrophe
    formula = f"left(ltrim({column}, {apostrophe}), 1) IN ({starts})"
    return f"CASE WHEN {formula} THEN {apostrophe} || {column} ELSE {column} END"


def restore(cell: str) -> str:
    """The inverse of `neutralise`."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell[1:]) else cell


class CsvProblem(Exception):
    """The file as a whole cannot be imported; the message says why, for the user."""


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str] | None  # None: the row is malformed, `error` says how
    error: str | None = None


class ItemCsvReader:
    """Rows of an item CSV file, read in chunks. Use as a context manager."""

    def __init__(self, path: Path, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows_read = 0
        self._handle: IO[str] = path.open(encoding="utf-8-sig", newline="")
        self._lines_read = 0
        self._reader = csv.reader(self._bounded_lines())
        try:
            self.columns = self._header()
        except BaseException:
            self._handle.close()  # no `with` was entered to close it
            raise

    def __enter__(self) -> ItemCsvReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.close()

    def _header(self) -> list[str]:
        first = next(self._records(), None)
        if first is None:
            raise CsvProblem("the file is empty: the first line must be the CSV header")
        header = [name.strip().lower() for name in first]
        for name in header:
            if not is_clean(name):
                raise CsvProblem("the CSV header contains control characters")
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise CsvProblem(f"duplicate CSV columns: {_names(duplicates)}")
        if "title" not in header:
            raise CsvProblem(
                "the CSV header must have a `title` column (and optionally `description`)"
            )
        unknown = [name for name in header if name not in COLUMNS + EXPORT_ONLY_COLUMNS]
        if unknown:
            raise CsvProblem(f"unknown CSV columns: {_names(unknown)}")
        return header

    def _bounded_lines(self) -> Iterator[str]:
        """The file's lines, each read only up to MAX_LINE_CHARS + 1 characters."""
        while line := self._handle.readline(MAX_LINE_CHARS + 1):
            self._lines_read += 1
            if len(line) > MAX_LINE_CHARS:
                raise CsvProblem(
                    f"line {self._lines_read} is longer than {MAX_LINE_CHARS} characters: "
                    "no valid row is that long"
                )
            yield line

    def _records(self) -> Iterator[list[str]]:
        while True:
            try:
                record = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvProblem(f"line {self._reader.line_num}: {exc}") from None
            except UnicodeDecodeError:
                raise CsvProblem(
                    f"the file is not UTF-8 text (after line {self._reader.line_num})"
                ) from None
            if record:  # blank lines are skipped
                yield record

    def _counted(self) -> Iterator[list[str]]:
        """The data records, refused past `max_rows`."""
        for record in self._records():
            self.rows_read += 1
            if self.rows_read > self.max_rows:
                raise CsvProblem(f"the file has more than IMPORT_MAX_ROWS ({self.max_rows}) rows")
            yield record

    def count(self) -> int:
        """The number of rows left in the file, read without building them."""
        for _ in self._counted():
            pass
        return self.rows_read

    def chunk(self, size: int) -> list[Row]:
        """Up to `size` more rows; an empty list at the end of the file."""
        rows: list[Row] = []
        for record in self._counted():
            line = self._reader.line_num
            if len(record) != len(self.columns):
                error = f"has {len(record)} fields, the header has {len(self.columns)}"
                rows.append(Row(line, None, error))
            else:
                rows.append(
                    Row(line, {k: restore(v) for k, v in zip(self.columns, record, strict=True)})
                )
            if len(rows) == size:
                break
        return rows


def _names(names: list[str]) -> str:
    # The header passed the text rule before any name is shown.
    shown = ", ".join(name[:40] for name in names[:10])
    return shown + (", ..." if len(names) > 10 else "")


def writer(handle: IO[str]) -> _NeutralisingWriter:
    return _NeutralisingWriter(handle)


class _NeutralisingWriter:
    def __init__(self, handle: IO[str]) -> None:
        self._writer = csv.writer(handle)

    def writerow(self, cells: list[object]) -> None:
        self._writer.writerow([neutralise(str(cell)) for cell in cells])

    def write_items(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (id, title, description, created_at, updated_at). Only the two texts can
        hold a formula: an id is hex digits and dashes, a time an ISO date (digits first)."""
        self._writer.writerows(
            (str(item_id), neutralise(title), neutralise(description or ""),
             created_at.isoformat(), updated_at.isoformat())
            for item_id, title, description, created_at, updated_at in rows
        )  # fmt: skip


class CrlfLineEnds:
    """Postgres's CSV (COPY ... TO STDOUT, FORMAT csv) as `writer` writes it: the same
    quoting (a field is quoted when it holds a comma, a quote, CR or LF; an empty one is
    NULL, unquoted), but rows end in LF where `csv` ends them in CRLF. This turns each LF
    outside quotes into CRLF, a chunk of the stream at a time: a quote toggles "inside" (a
    doubled quote toggles twice), so the parts between quotes alternate outside, inside."""

    def __init__(self) -> None:
        self.inside = False

    def __call__(self, data: bytes) -> bytes:
        parts = data.split(b'"')
        for index in range(1 if self.inside else 0, len(parts), 2):
            parts[index] = parts[index].replace(b"\n", b"\r\n")
        self.inside ^= (len(parts) - 1) % 2 == 1
        return b'"'.join(parts)
