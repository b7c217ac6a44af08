"""Load and curate protein-complex binding-affinity tables in the PPB-Affinity layout.

Where the facts come from:

- The layout: PPB-Affinity (Liu et al., Scientific Data 11:1316, 2024) has one row per measured complex with
  columns such as "Source Data Set", "Complex ID", "PDB", "Mutations", "Ligand Chains", "Receptor Chains",
  "KD(M)" (the dissociation constant in molar) and "Affinity Method" (SPR, ITC, BLI, ...). The study behind
  Proteinea/ppiseq published it on the Hub as `proteinea/ppb_affinity` (configurations "raw" and "filtered",
  the latter with train/validation/test splits), adding the columns "Ligand Sequences" and "Receptor Sequences":
  one amino-acid string per chain, chains joined by "," (its `data_processing/data_postprocessing.ipynb` splits
  them with `str.split(",")`, and its `ppiseq/data_adapters/ppi_datasets.py` reads those three columns).
- The curation, from that notebook, in its order: (1) `KD(M)` read as numbers; (2) rows where any ligand or
  receptor chain is shorter than 40 residues dropped; (3) rows with the same complex sequence merged: among them
  the best affinity method present is chosen by the priority SPR > ITC > BLI > RA > FL > SP > ELISA > IASP >
  IARA > IAGE > Other > Unknown (a blank method counts as Unknown), the KD becomes the arithmetic mean of that
  method's KDs, and the first such row is kept. Splits are made afterwards (see `splits.identity_split`).

Where this loader differs (each deliberate):

- Rows the study would pass through silently are errors here, naming the row, the column and the fix: a blank
  chain (two separators in a row), a character that is not a one-letter amino-acid code, a KD that is blank,
  not a number, zero or negative (the study's `|log10(KD + 1e-10)|` turns a KD of 0 into a label of 10).
  `on_bad_row="drop"` drops them instead, counted per reason in the curation report.
- Duplicates are matched on the chains of each side (the study compares all chains joined into one string, which
  would also merge complexes whose chains are cut at different places). `duplicates="reference"` (the default)
  is the study's rule; `"median"` and `"mean"` take the median or mean of log10 KD (the mean of log KD is the
  geometric mean of KD), `"first"` keeps the first row's KD and `"keep"` keeps every row.
- The label is exact pKd = -log10 KD by default; `label_transform="reference"` gives the study's
  `|log10(KD + 1e-10)|` for comparison with published figures only (see `integrations.metrics`).

Not model code: nothing in `hf_metaembed.modeling` imports it.
"""

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..integrations.metrics import LABEL_TRANSFORMS, check_kd_unit, get_label_transform
from ..io.records import where as record_where
from .tables import TableError, read_table

logger = logging.getLogger(__name__)

# one-letter codes: the 20 standard amino acids, X (unknown), the ambiguity codes B, Z, J, and U (selenocysteine),
# O (pyrrolysine); ProtT5-style tokenizers map the rare ones to X themselves
AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWYXBZJUO")

# the study's order of preference among affinity methods when one complex was measured several times
METHOD_PRIORITY = ("SPR", "ITC", "BLI", "RA", "FL", "SP", "ELISA", "IASP", "IARA", "IAGE", "Other", "Unknown")

DUPLICATE_RULES = ("reference", "median", "mean", "first", "keep")


class BadRowError(ValueError):
    """A row the user must fix (or drop with `on_bad_row="drop"`); `row` and `column` say where."""

    def __init__(self, message: str, row: int, column: str, reason: str):
        super().__init__(message)
        self.row, self.column, self.reason = row, column, reason


@dataclass
class ComplexRecord:
    """One curated complex.

    Attributes:
        ligand: the ligand side's chains, one amino-acid string each (upper case).
        receptor: the receptor side's chains.
        label: the regression target, `label_transform` applied to `kd`.
        kd: the dissociation constant in the loader's `kd_unit` (molar for "KD(M)"), after duplicate resolution.
        pdb: the PDB id (upper case), or None when loaded with `pdb_column=None`.
        row: the source row this record was read from (0-based, header not counted).
        method: the affinity method ("Unknown" when blank or when the table has no method column).
        merged_rows: every source row folded into this record (itself included), in source order.
        split: a split the table already names (a "split" column, or the split of a Hub dataset), else None.
        line: the line of a CSV/TSV/JSONL file the row starts on (None for other sources).
    """

    ligand: list[str]
    receptor: list[str]
    label: float
    kd: float
    pdb: str | None
    row: int
    method: str = "Unknown"
    merged_rows: tuple[int, ...] = ()
    split: str | None = None
    line: int | None = None

    @property
    def sequence(self) -> str:
        """Every chain of both sides joined into one string, ligand first: what the study clusters by identity."""
        return "".join(self.ligand) + "".join(self.receptor)


@dataclass
class CurationReport:
    """What the loader read, dropped and merged.

    Attributes:
        source: the file or Hub id read.
        rows_read: rows in the source.
        dropped: rows dropped, by reason, in the order the curation steps ran.
        dropped_rows: the first few dropped rows per reason (0-based; the report prints them as records from 1).
        duplicate_groups: complexes that had more than one row.
        kept: records returned.
        settings: the curation settings used.
        notes: anything else worth knowing (e.g. no method column).
    """

    source: str
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_rows: dict[str, list[int]] = field(default_factory=dict)
    duplicate_groups: int = 0
    kept: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, row: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if len(self.dropped_rows.setdefault(reason, [])) < 10:
            self.dropped_rows[reason].append(row)

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.rows_read} rows read, {self.kept} complexes kept"]
        for reason, count in self.dropped.items():
            example = ", ".join(str(row + 1) for row in self.dropped_rows.get(reason, []))
            lines.append(f"  dropped {count}: {reason} (records {example}{', ...' if count > 10 else ''})")
        if self.duplicate_groups:
            lines.append(
                f"  {self.duplicate_groups} complexes had several rows, merged by rule "
                f"{self.settings.get('duplicates')!r}"
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append("  settings: " + ", ".join(f"{key}={value!r}" for key, value in self.settings.items()))
        return "\n".join(lines)


@dataclass
class ComplexDataset(Sequence):
    """Curated complexes (a sequence of `ComplexRecord`) and the report of their curation."""

    records: list[ComplexRecord]
    report: CurationReport

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def __iter__(self) -> Iterator[ComplexRecord]:
        return iter(self.records)

    @property
    def labels(self) -> np.ndarray:
        """`(complexes,)` float64 labels."""
        return np.array([record.label for record in self.records], dtype=np.float64)

    def select(self, indices: Sequence[int]) -> "ComplexDataset":
        """The records at `indices` (e.g. one split of `splits.identity_split`), sharing this report."""
        return ComplexDataset([self.records[int(index)] for index in indices], self.report)


def _is_blank(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _chains(value: Any, row: int, column: str, separator: str, where: str) -> list[str]:
    if _is_blank(value) or (isinstance(value, (list, tuple)) and not value):
        raise BadRowError(
            f"{where}: blank; give the side's chains as amino-acid strings joined by {separator!r}",
            row,
            column,
            "blank sequence",
        )
    pieces = list(value) if isinstance(value, (list, tuple)) else str(value).split(separator)
    chains = []
    for number, piece in enumerate(pieces, start=1):
        chain = str(piece).strip().upper()
        if not chain:
            raise BadRowError(
                f"{where}: chain {number} of {len(pieces)} is blank (two separators in a row, or one at an end); "
                f"remove the stray {separator!r}",
                row,
                column,
                "blank chain",
            )
        bad = sorted(set(chain) - AMINO_ACIDS)
        if bad:
            position = min(chain.index(character) for character in bad) + 1
            raise BadRowError(
                f"{where}: chain {number} has characters that are not amino acids: {''.join(bad)!r} (first at "
                f"residue {position}); use one-letter codes (ACDEFGHIKLMNPQRSTVWY, X for unknown), or pass "
                f"chain_separator= if chains are joined by something else",
                row,
                column,
                "not amino acids",
            )
        chains.append(chain)
    return chains


def _kd(value: Any, row: int, column: str, where: str) -> float:
    if _is_blank(value):
        raise BadRowError(f"{where}: blank; give the dissociation constant, e.g. 1.2e-9", row, column, "bad KD")
    try:
        kd = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise BadRowError(
            f"{where}: {value!r} is not a number; write KD as a number such as 1.2e-9", row, column, "bad KD"
        ) from None
    if not (math.isfinite(kd) and kd > 0):
        raise BadRowError(
            f"{where}: {value!r} is not a positive finite KD; fix the measurement or drop the row",
            row,
            column,
            "bad KD",
        )
    return kd


def _resolve(group: list[ComplexRecord], rule: str) -> tuple[ComplexRecord, float]:
    """The kept row of a group of rows with the same chains, and its KD under `rule`."""
    if rule == "reference":

        def rank(record: ComplexRecord) -> float:
            # a method missing from the study's list ranks just before Unknown (the study would stop with an error)
            return (
                METHOD_PRIORITY.index(record.method)
                if record.method in METHOD_PRIORITY
                else len(METHOD_PRIORITY) - 1.5
            )

        best = min(rank(record) for record in group)
        chosen = [record for record in group if rank(record) == best]
        return chosen[0], float(np.mean([record.kd for record in chosen]))
    log_kd = np.log10([record.kd for record in group])
    if rule == "median":
        return group[0], float(10.0 ** np.median(log_kd))
    if rule == "mean":
        return group[0], float(10.0 ** np.mean(log_kd))
    return group[0], group[0].kd  # "first"


def load_ppb_affinity(
    path_or_hub_id: Any,
    *,
    ligand_column: str = "Ligand Sequences",
    receptor_column: str = "Receptor Sequences",
    label_column: str = "KD(M)",
    pdb_column: str | None = "PDB",
    method_column: str | None = "Affinity Method",
    split_column: str | None = "split",
    chain_separator: str = ",",
    label_transform: str = "pkd",
    kd_unit: str = "M",
    min_chain_length: int = 40,
    duplicates: str = "reference",
    on_bad_row: str = "error",
    hub_config: str | None = None,
    hub_split: str | None = None,
) -> ComplexDataset:
    """Read a PPB-Affinity-format table and curate it as the study did (see the module docstring for sources).

    Args:
        path_or_hub_id: a `.csv`, `.tsv`, `.jsonl` (each optionally `.gz`) or `.parquet` file; a Hub dataset id such
            as `"proteinea/ppb_affinity"` (needs network access and HF_HUB_OFFLINE unset); or rows in memory (a
            `datasets.Dataset`/`DatasetDict`, a pandas `DataFrame`, a list of dicts).
        ligand_column, receptor_column: columns holding each side's chains joined by `chain_separator` (a list of
            strings is accepted too, e.g. in JSONL or parquet).
        label_column: the column holding KD in `kd_unit`.
        pdb_column: the PDB id column (entries of one PDB id are kept in one split); None if the table has none.
        method_column: the affinity-method column used by `duplicates="reference"`; if absent, every row counts
            as "Unknown" and the rule reduces to the mean KD of the duplicates.
        split_column: a column naming an existing split (as the study's filtered table has), read into
            `ComplexRecord.split` when present.
        chain_separator: the string between chains (the study's ","); spaces around chains are ignored.
        label_transform: a name in `integrations.metrics.LABEL_TRANSFORMS`: `"pkd"` (exact -log10 KD, default) or
            `"reference"` (the study's |log10(KD + 1e-10)|, for comparison with published figures only).
        kd_unit: the unit of `label_column` (M, mM, uM, nM, pM, fM).
        min_chain_length: complexes with any chain shorter than this are dropped (the study's 40; 0 keeps all).
        duplicates: how rows with the same ligand and receptor chains are merged: "reference" (the study's
            method priority, then the mean KD of the best method), "median" or "mean" (of log10 KD), "first", or
            "keep" (no merging).
        on_bad_row: "error" (default: stop at the first bad row, naming it) or "drop" (drop and count).
        hub_config, hub_split: the Hub dataset's configuration and split (default: every split).

    Returns:
        A `ComplexDataset`: the records in source order (a merged complex at its first row's place) and a
        `CurationReport` (also logged at INFO).

    Raises:
        TableError: the source cannot be read (missing file, unknown format, a Hub id while offline).
        BadRowError: a bad row (with `on_bad_row="error"`), naming its line and record (from 1), the column and the
            fix.
        ValueError: an unknown setting or a missing column, listing the choices.
    """
    transform = get_label_transform(label_transform)
    check_kd_unit(kd_unit)
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"unknown duplicates rule {duplicates!r}; choose one of: {', '.join(DUPLICATE_RULES)}")
    if on_bad_row not in ("error", "drop"):
        raise ValueError(f"on_bad_row is {on_bad_row!r}; choose 'error' or 'drop'")
    if not isinstance(min_chain_length, int) or min_chain_length < 0:
        raise ValueError(f"min_chain_length is {min_chain_length!r}; pass a whole number of residues (0 keeps all)")
    if not chain_separator:
        raise ValueError("chain_separator is empty; pass the string between chains, such as ','")

    name, columns, rows, lines = read_table(
        path_or_hub_id, hub_config=hub_config, hub_split=hub_split, with_lines=True
    )
    required = [ligand_column, receptor_column, label_column] + ([pdb_column] if pdb_column else [])
    for column in required:
        if column not in columns:
            keyword = {
                ligand_column: "ligand_column",
                receptor_column: "receptor_column",
                label_column: "label_column",
            }.get(column, "pdb_column")
            raise ValueError(
                f"{name} has no column {column!r}; its columns are: {', '.join(map(str, columns))}. "
                f"Pass {keyword}= naming the right one" + (" (or None)" if keyword == "pdb_column" else "")
            )
    report = CurationReport(
        name,
        len(rows),
        settings={
            "min_chain_length": min_chain_length,
            "duplicates": duplicates,
            "label_transform": label_transform,
            "chain_separator": chain_separator,
            "on_bad_row": on_bad_row,
        },
    )
    has_method = bool(method_column) and method_column in columns
    if duplicates == "reference" and not has_method:
        report.notes.append(
            f"no column {method_column!r}: every row ranks as 'Unknown', so duplicates take the mean KD"
        )

    parsed = []
    for row_number, row in enumerate(rows):
        try:
            line = lines[row_number] if lines is not None else None
            record = _parse_row(
                row, row_number, line, name, ligand_column, receptor_column, label_column, pdb_column, chain_separator
            )
        except BadRowError as error:
            if on_bad_row == "error":
                raise
            report.drop(error.reason, row_number)
            continue
        method = row.get(method_column) if has_method else None
        record.method = "Unknown" if _is_blank(method) else str(method).strip()
        split = row.get(split_column) if split_column else None
        record.split = None if _is_blank(split) else str(split).strip()
        parsed.append(record)

    kept = []
    for record in parsed:
        shortest = min(len(chain) for chain in record.ligand + record.receptor)
        if shortest < min_chain_length:
            report.drop(f"a chain shorter than {min_chain_length} residues", record.row)
        else:
            kept.append(record)

    records = _merge_duplicates(kept, duplicates, report)
    for record in records:
        record.label = float(transform(record.kd, kd_unit))
    report.kept = len(records)
    logger.info("%s", report)
    return ComplexDataset(records, report)


def _parse_row(
    row: dict,
    row_number: int,
    line: int | None,
    name: str,
    ligand_column: str,
    receptor_column: str,
    label_column: str,
    pdb_column: str | None,
    separator: str,
) -> ComplexRecord:
    def where(column: str) -> str:
        return f"{record_where(Path(name).name, line, row_number)}, column {column!r}"

    ligand = _chains(row.get(ligand_column), row_number, ligand_column, separator, where(ligand_column))
    receptor = _chains(row.get(receptor_column), row_number, receptor_column, separator, where(receptor_column))
    kd = _kd(row.get(label_column), row_number, label_column, where(label_column))
    pdb = None
    if pdb_column:
        value = row.get(pdb_column)
        if _is_blank(value):
            raise BadRowError(
                f"{where(pdb_column)}: blank; fill in the PDB id (or pass pdb_column=None)",
                row_number,
                pdb_column,
                "blank PDB id",
            )
        pdb = str(value).strip().upper()
    return ComplexRecord(ligand, receptor, float("nan"), kd, pdb, row_number, merged_rows=(row_number,), line=line)


def _merge_duplicates(records: list[ComplexRecord], rule: str, report: CurationReport) -> list[ComplexRecord]:
    if rule == "keep":
        return records
    groups: dict[tuple, list[ComplexRecord]] = {}
    for record in records:
        groups.setdefault((tuple(record.ligand), tuple(record.receptor)), []).append(record)
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        kept, kd = _resolve(group, rule)
        kept.kd = kd
        kept.merged_rows = tuple(record.row for record in group)
        report.duplicate_groups += 1
        for record in group:
            if record is not kept:
                report.drop(f"duplicate complex merged into another row (rule {rule!r})", record.row)
        merged.append(kept)
    merged.sort(key=lambda record: record.merged_rows[0])
    return merged


__all__ = [
    "AMINO_ACIDS",
    "DUPLICATE_RULES",
    "LABEL_TRANSFORMS",
    "METHOD_PRIORITY",
    "BadRowError",
    "ComplexDataset",
    "ComplexRecord",
    "CurationReport",
    "TableError",
    "load_ppb_affinity",
]
