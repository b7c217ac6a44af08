"""Streaming readers of sequence files: FASTA, CSV/TSV, JSONL and plain text (one sequence per line), gzipped or not.

One reader per format: `read_rows` streams the rows of a table (CSV, TSV, JSONL) as dicts; `read_records` streams
`Record`s (an id and the sequence of one column) from any format, its tables through `read_rows`;
`read_pair_records` streams `PairRecord`s (an id and the chains of ligand and receptor) from a table;
`records_to_inputs` turns table rows into model inputs (plain sequences, or the chains of ligand and receptor).
Memory does not grow with the size of the file, and every problem is an `InputError` naming the file and the line.
Text is read as UTF-8; a byte-order mark at the start (as Excel writes in "CSV UTF-8" exports) is dropped.

Not model code: the CLI, the cache command and the other tools use it; the model files never import it.
"""

import contextlib
import csv
import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

INPUT_FORMATS = {
    "fasta": (".fasta", ".fa", ".faa", ".fas", ".fna", ".fsa"),
    "csv": (".csv",),
    "tsv": (".tsv", ".tab"),
    "jsonl": (".jsonl", ".ndjson"),
    "text": (".txt", ".text"),
}
# the formats with named columns, which `read_rows` reads
TABLE_FORMATS = ("csv", "tsv", "jsonl")


class InputError(ValueError):
    """Input the user must fix: a missing file, an unknown format or column, a malformed line."""


def where(file: str | None, line: int | None, index: int, record_id: str | None = None) -> str:
    """How messages name a record, as people count: `labels.csv line 5 (record 4)`, with `, id 'P1'` when the
    record has an id of its own, and without the line for files that are not line-based. `index` is 0-based."""
    number = f"record {index + 1}"
    if record_id is not None and record_id != str(index + 1):
        number += f", id {record_id!r}"
    prefix = f"{file} " if file else ""
    return f"{prefix}line {line} ({number})" if line is not None else f"{prefix}{number}"


@dataclass
class Record:
    """One input record: its position among the file's records (`index`, 0-based; messages count from 1), an id,
    the sequence or text, optional fields, and where it is: the file's name and the line it starts on."""

    index: int
    id: str
    text: str
    fields: dict[str, Any] | None = None
    file: str | None = None
    line: int | None = None

    def where(self) -> str:
        """`in.fasta line 7 (record 3, id 'P12345')`: the record as messages name it."""
        return where(self.file, self.line, self.index, self.id)


@dataclass
class PairRecord:
    """One ligand-receptor complex of a table: its position among the table's records (0-based), an id, the chains
    of each side, optional fields, and the file's name and the record's line."""

    index: int
    id: str
    ligand: list[str]
    receptor: list[str]
    fields: dict[str, Any] | None = None
    file: str | None = None
    line: int | None = None

    def where(self) -> str:
        """`pairs.csv line 5 (record 4)`: the complex as messages name it."""
        return where(self.file, self.line, self.index, self.id)


def detect_input_format(path: str | os.PathLike, declared: str | None = None) -> str:
    """The reader for `path`: `declared` if given, else from the suffix (a trailing `.gz` is ignored)."""
    if declared is not None:
        if declared not in INPUT_FORMATS:
            raise InputError(f"unknown input format {declared!r}; choose one of: {', '.join(INPUT_FORMATS)}")
        return declared
    name = Path(path).name.lower()
    name = name.removesuffix(".gz")
    for input_format, suffixes in INPUT_FORMATS.items():
        if name.endswith(suffixes):
            return input_format
    known = ", ".join(f"{fmt} ({' '.join(suffixes)})" for fmt, suffixes in INPUT_FORMATS.items())
    raise InputError(
        f"unsupported input format for {str(path)!r}: supported are {known}, optionally gzipped; "
        "rename the file or pass --input-format"
    )


def _open_text(path: Path) -> IO[str]:
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"input {str(path)!r} is a folder; pass a file")
    try:
        # utf-8-sig: a byte-order mark would otherwise become part of the first column's name or the first record
        if path.name.lower().endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except PermissionError:
        raise InputError(f"input file {str(path)!r} is not readable (permission denied)") from None


@contextlib.contextmanager
def _reading(path: Path, input_format: str) -> Iterator[IO[str]]:
    """`path` opened as text; undecodable bytes, broken gzip data and malformed CSV become `InputError`s naming it."""
    with _open_text(path) as handle:
        try:
            yield handle
        except UnicodeDecodeError as error:
            raise InputError(f"{path.name}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except (gzip.BadGzipFile, EOFError) as error:
            raise InputError(f"{path.name}: corrupt gzip data ({error})") from None
        except csv.Error as error:
            raise InputError(f"{path.name}: malformed {input_format.upper()} ({error})") from None


# ---------------------------------------------------------------------------------------------- tables


def _missing_column(name: str, column: str, available: list[str], where: str = "") -> InputError:
    shown = ", ".join(repr(c) for c in available) if available else "none"
    return InputError(f"{name}{where}: no column {column!r}; available columns: {shown} (names are case-sensitive)")


def _csv_rows(handle: IO[str], name: str, delimiter: str, columns: list[str]) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(handle, delimiter=delimiter)
    available = list(reader.fieldnames or [])
    for wanted in columns:
        if wanted not in available:
            raise _missing_column(name, wanted, available)
    start = reader.line_num + 1  # the line a row starts on (a quoted cell may span several)
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def _jsonl_rows(handle: IO[str], name: str, columns: list[str]) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{name} line {number}: not valid JSON ({error.msg}); fix or remove the line") from None
        if not isinstance(item, dict):
            raise InputError(f"{name} line {number}: expected a JSON object, got {type(item).__name__}")
        for wanted in columns:
            if wanted not in item:
                raise _missing_column(name, wanted, list(item), f" line {number}")
        yield number, item


def read_rows(
    path: str | os.PathLike, input_format: str | None = None, columns: Sequence[str] = ()
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream the rows of a table: CSV or TSV (header line first) or JSONL (one JSON object per line).

    Args:
        path: the file; `.gz` is read transparently.
        input_format: `"csv"`, `"tsv"` or `"jsonl"`, or None to tell from the suffix.
        columns: columns every row must have (checked against a CSV header once, on every JSONL line).

    Yields:
        `(line number, row)` in file order, the line (1-based, the header is line 1) being where the row starts.
        CSV/TSV values are strings (None for a short row's missing cells);
        JSONL values are as parsed (a list of chains stays a list). Blank lines are skipped.

    Raises:
        InputError: a missing or unreadable file, a format without columns, a missing column (listing those
            available), a malformed line (naming it).
    """
    path = Path(path)
    input_format = detect_input_format(path, input_format)
    if input_format not in TABLE_FORMATS:
        raise InputError(f"{path.name}: {input_format} files have no columns; use CSV, TSV or JSONL")
    with _reading(path, input_format) as handle:
        if input_format == "jsonl":
            yield from _jsonl_rows(handle, path.name, list(columns))
        else:
            yield from _csv_rows(handle, path.name, "," if input_format == "csv" else "\t", list(columns))


# ---------------------------------------------------------------------------------------------- records


def _read_fasta(handle: IO[str], name: str) -> Iterator[Record]:
    header, pieces, index, header_line = None, [], 0, None
    for number, line in enumerate(handle, start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if header is not None:
                yield Record(index, header, "".join(pieces), file=name, line=header_line)
                index += 1
            header, pieces, header_line = (line[1:].split() or [f"record_{index + 1}"])[0], [], number
        elif header is None:
            raise InputError(f"{name} line {number}: sequence data before the first '>' header; is this FASTA?")
        else:
            pieces.append(line)
    if header is not None:
        yield Record(index, header, "".join(pieces), file=name, line=header_line)


def _read_lines(handle: IO[str], name: str) -> Iterator[Record]:
    index = 0
    for number, line in enumerate(handle, start=1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        yield Record(index, str(index + 1), text, file=name, line=number)
        index += 1


def _table_records(
    path: Path, input_format: str, column: str, id_column: str | None, extra: list[str]
) -> Iterator[Record]:
    wanted = [column, *([id_column] if id_column else []), *extra]
    for index, (number, row) in enumerate(read_rows(path, input_format, wanted)):
        text = row[column]
        if not isinstance(text, str):  # a JSONL value of another type, or a CSV row cut short
            problem = f"field {column!r} holds {type(text).__name__}, not a string"
            if input_format != "jsonl":
                problem = f"the row has no value for column {column!r}"
            raise InputError(f"{where(path.name, number, index)}: {problem}")
        record_id = str(row[id_column]) if id_column else str(index + 1)
        yield Record(index, record_id, text, {key: row[key] for key in extra}, file=path.name, line=number)


def read_records(
    path: str | os.PathLike,
    input_format: str | None = None,
    column: str = "sequence",
    id_column: str | None = None,
    extra_columns: list[str] | None = None,
) -> Iterator[Record]:
    """Stream the records of a sequence file, one at a time.

    Args:
        path: a FASTA, CSV, TSV, JSONL or text file (one sequence per line); `.gz` is read transparently.
        input_format: one of `INPUT_FORMATS`, or None to tell from the suffix.
        column: CSV/TSV column or JSONL field holding the sequence (ignored for FASTA and text).
        id_column: column or field holding the record id; default: the FASTA header's first word, else the record
            number (1-based, as messages count).
        extra_columns: further columns or fields to return in `Record.fields` (e.g. a label).

    Yields:
        `Record`s in file order. Blank lines of text and JSONL files are skipped (they are not records).

    Raises:
        InputError: a missing or unreadable file, an unknown format, a missing column (listing those available), a
            malformed line (naming it).
    """
    path = Path(path)
    input_format = detect_input_format(path, input_format)
    extra = list(extra_columns or [])
    if input_format in TABLE_FORMATS:
        yield from _table_records(path, input_format, column, id_column, extra)
        return
    if extra:
        raise InputError(f"{input_format} files have no columns; use CSV, TSV or JSONL to give {', '.join(extra)}")
    with _reading(path, input_format) as handle:
        yield from _read_fasta(handle, path.name) if input_format == "fasta" else _read_lines(handle, path.name)


# ---------------------------------------------------------------------------------------------- model inputs


def _side_chains(
    record: dict, columns: Sequence[str], separator: str, row: int, side: str, place: str | None = None
) -> list[str]:
    place = place or where(None, None, row)
    chains = []
    for column in columns:
        if column not in record:
            raise InputError(f"{place}: no column {column!r} for the {side}; columns are: {', '.join(record)}")
        value = record[column]
        if isinstance(value, list):
            chains += [str(chain).strip() for chain in value if str(chain).strip()]
        elif value not in (None, ""):
            chains += [chain.strip() for chain in str(value).split(separator) if chain.strip()]
    if not chains:
        raise InputError(
            f"{place}: the {side} has no chain (columns {', '.join(columns)} are empty); fill them in or drop the row"
        )
    return chains


def read_pair_records(
    path: str | os.PathLike,
    input_format: str | None = None,
    *,
    ligand_columns: Sequence[str],
    receptor_columns: Sequence[str],
    chain_separator: str = ",",
    id_column: str | None = None,
    extra_columns: Sequence[str] | None = None,
) -> Iterator[PairRecord]:
    """Stream the ligand-receptor complexes of a table (CSV, TSV or JSONL), one `PairRecord` per row.

    Args:
        path: the table; `.gz` is read transparently.
        input_format: `"csv"`, `"tsv"` or `"jsonl"`, or None to tell from the suffix.
        ligand_columns, receptor_columns: the column(s) holding each side's chains; a cell holds one chain, several
            joined by `chain_separator` (PPB-Affinity's `"Ligand Sequences"` joins them with `,`), or (JSONL) a list
            of chains; empty cells are skipped.
        chain_separator: the string between chains in one cell.
        id_column: column holding record ids; default: the record number (1-based).
        extra_columns: further columns to return in `PairRecord.fields` (e.g. a label).

    Raises:
        InputError: a missing or unreadable file, a format without columns, a missing column (listing those
            available), a side without any chain (naming the record, its line and the columns).
    """
    if not chain_separator:
        raise InputError("the chain separator is empty; pass the string between chains, such as ','")
    path = Path(path)
    extra = list(extra_columns or [])
    wanted = [*ligand_columns, *receptor_columns, *([id_column] if id_column else []), *extra]
    for index, (number, row) in enumerate(read_rows(path, input_format, wanted)):
        place = where(path.name, number, index)
        ligand = _side_chains(row, ligand_columns, chain_separator, index, "ligand", place)
        receptor = _side_chains(row, receptor_columns, chain_separator, index, "receptor", place)
        record_id = str(row[id_column]) if id_column else str(index + 1)
        extras = {key: row[key] for key in extra}
        yield PairRecord(index, record_id, ligand, receptor, extras, file=path.name, line=number)


def records_to_inputs(
    records: list[dict],
    *,
    sequence_column: str | None = None,
    ligand_columns: Sequence[str] | None = None,
    receptor_columns: Sequence[str] | None = None,
    chain_separator: str = ",",
    lines: Sequence[int] | None = None,
    file: str | None = None,
) -> dict:
    """`{"sequences": [...]}` or `{"ligand": [[...]], "receptor": [[...]]}` from table rows (see `read_rows`;
    `lines` and `file`, when given, are the rows' line numbers and the file's name, for messages).

    Complexes: each side's chains come from one or more columns; a cell holds one chain, several joined by
    `chain_separator`, or (JSONL) a list of chains; empty cells are skipped. Without column arguments, a `sequence`
    column, else `ligand` and `receptor` columns, are used. Raises `InputError` naming the row of a problem.
    """
    if not records:
        raise InputError("the input file has no rows")
    columns = list(records[0])
    if sequence_column is None and ligand_columns is None and receptor_columns is None:
        if "sequence" in columns:
            sequence_column = "sequence"
        elif "ligand" in columns and "receptor" in columns:
            ligand_columns, receptor_columns = ["ligand"], ["receptor"]
        else:
            raise InputError(
                f"name the input columns: a sequence column, or ligand and receptor chain columns (found: "
                f"{', '.join(columns)})"
            )

    def place(row: int) -> str:
        return where(file, lines[row] if lines is not None else None, row)

    if sequence_column is not None:
        if ligand_columns or receptor_columns:
            raise InputError("give either a sequence column or ligand/receptor columns, not both")
        sequences = []
        for row, record in enumerate(records):
            if sequence_column not in record:
                raise InputError(f"{place(row)}: no column {sequence_column!r}; columns are: {', '.join(record)}")
            sequences.append(str(record[sequence_column]))
        return {"sequences": sequences}
    if not ligand_columns or not receptor_columns:
        raise InputError("complexes need both ligand and receptor columns")
    sides = {"ligand": ligand_columns, "receptor": receptor_columns}
    return {
        side: [_side_chains(r, columns, chain_separator, i, side, place(i)) for i, r in enumerate(records)]
        for side, columns in sides.items()
    }


__all__ = [
    "INPUT_FORMATS",
    "TABLE_FORMATS",
    "InputError",
    "PairRecord",
    "Record",
    "detect_input_format",
    "read_pair_records",
    "read_records",
    "read_rows",
    "records_to_inputs",
    "where",
]
