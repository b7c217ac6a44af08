"""Rows of a table from a local file (CSV, TSV, JSONL, parquet), a Hub dataset, or rows already in memory.

Every reader returns the same thing: the source's display name, its column names and its rows as dicts, numbered
from 0 in file order (the header is not a row; this is the index pandas or `datasets` would show), and, for
line-based files, the line each row starts on (messages count records from 1 and name the line). Optional
packages (`pyarrow` for parquet, `datasets` for the Hub) are imported only when that kind of source is read.

Not model code: nothing in `hf_metaembed.modeling` imports it.
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..io.records import InputError, read_rows

TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class TableError(ValueError):
    """A table the user must fix or point to differently: a missing file, an unknown format, a malformed line."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _table_format(path: Path) -> str:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    table_format = TABLE_FORMATS.get(suffixes[-1] if suffixes else "")
    if table_format is None:
        known = ", ".join(sorted(TABLE_FORMATS))
        raise TableError(f"{path}: unknown table format {path.suffix!r}; use one of {known} (.gz allowed but parquet)")
    return table_format


def _read_rows(path: Path, table_format: str) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """CSV, TSV and JSONL through the library's one reader (`io.records.read_rows`), its errors as `TableError`;
    with each row's line number."""
    try:
        numbered = list(read_rows(path, table_format))
    except InputError as error:
        raise TableError(str(error)) from None
    rows = [row for _, row in numbered]
    return list(dict.fromkeys(column for row in rows for column in row)), rows, [line for line, _ in numbered]


def _read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise TableError(f"reading {path} needs pyarrow: pip install pyarrow (or save the table as CSV)") from None
    table = parquet.read_table(path)
    return list(table.column_names), table.to_pylist()


def _read_hub(dataset_id: str, config: str | None, split: str | None) -> tuple[list[str], list[dict[str, Any]]]:
    if _offline():
        raise TableError(
            f"{dataset_id!r} is not a local file, and HF_HUB_OFFLINE is set, so it cannot be downloaded from the Hub; "
            "unset HF_HUB_OFFLINE (or set it to 0) to download it, or pass the path of a local copy"
        )
    try:
        import datasets
    except ImportError:
        raise TableError(
            f"reading the Hub dataset {dataset_id!r} needs the datasets package: pip install datasets"
        ) from None
    loaded = datasets.load_dataset(dataset_id, config, split=split)
    return rows_from_memory(loaded)


def rows_from_memory(table: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a `datasets.Dataset`, a `datasets.DatasetDict` (every split, in order, each row given a
    `"split"` field naming it unless it has one), a pandas `DataFrame`, or an iterable of mappings."""
    if hasattr(table, "to_dict") and hasattr(table, "columns") and hasattr(table, "iloc"):  # pandas.DataFrame
        return [str(column) for column in table.columns], table.to_dict("records")
    if hasattr(table, "column_names") and hasattr(table, "to_list"):  # datasets.Dataset
        return list(table.column_names), table.to_list()
    if isinstance(table, Mapping) and table and all(hasattr(part, "column_names") for part in table.values()):
        columns, rows = {}, []  # datasets.DatasetDict: every split, in order
        for split_name, part in table.items():
            columns.update(dict.fromkeys(part.column_names))
            rows.extend({"split": split_name, **row} for row in part)
        return list(columns) + ([] if "split" in columns else ["split"]), rows
    if isinstance(table, Iterable) and not isinstance(table, (str, bytes, Mapping)):
        rows, columns = [], {}
        for index, row in enumerate(table):
            if not isinstance(row, Mapping):
                raise TableError(
                    f"record {index + 1} is a {type(row).__name__}, not a mapping of column name to value"
                )
            columns.update(dict.fromkeys(row))
            rows.append(dict(row))
        return list(columns), rows
    raise TableError(f"cannot read rows from a {type(table).__name__}; pass a file path, a Hub dataset id or rows")


def read_table(
    source: Any, *, hub_config: str | None = None, hub_split: str | None = None, with_lines: bool = False
) -> tuple:
    """Read every row of a table.

    Args:
        source: a local `.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson` (each optionally `.gz`) or `.parquet` file; a Hub
            dataset id such as `"proteinea/ppb_affinity"` (read with `datasets.load_dataset`, which needs network
            access and HF_HUB_OFFLINE unset); or rows in memory (see `rows_from_memory`).
        hub_config: the Hub dataset's configuration (e.g. `"raw"` or `"filtered"`), if it has several.
        hub_split: one split of the Hub dataset; by default every split, each row tagged with its split name.
        with_lines: also return each row's line number in the file (None for sources without lines: parquet, the
            Hub, rows in memory), for messages that name the line.

    Returns:
        `(name, columns, rows)`: a name for messages, the column names, and the rows as dicts in source order;
        `(name, columns, rows, lines)` with `with_lines`.

    Raises:
        TableError: on a missing file or unknown format, a malformed JSONL line, a Hub id while offline, or a
            missing optional package (naming what to install).
    """
    name, columns, rows, lines = _read_any(source, hub_config, hub_split)
    return (name, columns, rows, lines) if with_lines else (name, columns, rows)


def _read_any(source: Any, hub_config: str | None, hub_split: str | None) -> tuple:
    if not isinstance(source, (str, os.PathLike)):
        return ("<rows>", *rows_from_memory(source), None)
    path = Path(source).expanduser()
    if path.is_file():
        table_format = _table_format(path)
        if table_format == "parquet":
            return (str(path), *_read_parquet(path), None)
        return (str(path), *_read_rows(path, table_format))
    if path.is_dir():
        raise TableError(f"{path} is a folder; pass the table file inside it (CSV, TSV, JSONL or parquet)")
    text = os.fspath(source)
    looks_like_hub_id = text.count("/") == 1 and not path.suffix and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise TableError(
            f"no file {text!r}; pass a CSV, TSV, JSONL or parquet file, or a Hub dataset id such as "
            "'proteinea/ppb_affinity'"
        )
    return (text, *_read_hub(text, hub_config, hub_split), None)


__all__ = ["TABLE_FORMATS", "TableError", "read_table", "rows_from_memory"]
